"""Extract from Twilio's OpenAPI description of the 2010-04-01 API the schemas the sandbox
contract test (tests/integrations/twilio/test_contract.py) validates against, and write them
next to this script as twilio_api_v2010.subset.json.

    python tests/integrations/twilio/openapi/extract.py path/to/twilio_api_v2010.json COMMIT

The document is twilio/twilio-oai's spec/json/twilio_api_v2010.json at COMMIT (README.md
beside this script names the one vendored). The schemas are copied unchanged, in the
document's OpenAPI 3.0 dialect; the test turns them into JSON Schema.
"""

import json
import sys
from pathlib import Path
from typing import Any

SOURCE = "https://github.com/twilio/twilio-oai/blob/{commit}/spec/json/twilio_api_v2010.json"
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
# The 2010-04-01 document has no error component: its one error body schema (code,
# message, more_info, status: what every error response of the API carries) is inline.
ERROR_RESPONSE = (
    "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings/{Sid}.json",
    "post",
    "408",
)
COMPONENTS = [
    "api.v2010.account",
    "api.v2010.account.message",
    "account_enum_status",
    "account_enum_type",
    "message_enum_direction",
    "message_enum_status",
]


def extract(document: dict[str, Any], commit: str) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    subset = {name: schemas[name] for name in COMPONENTS}
    subset["ListMessageResponse"] = document["paths"][MESSAGES]["get"]["responses"]["200"][
        "content"
    ]["application/json"]["schema"]
    path, method, status = ERROR_RESPONSE
    subset["error"] = document["paths"][path][method]["responses"][status]["content"][
        "application/json"
    ]["schema"]
    return {
        "x-source": {
            "url": SOURCE.format(commit=commit),
            "commit": commit,
            "openapi": document["openapi"],
            "extracted_by": "tests/integrations/twilio/openapi/extract.py",
        },
        "schemas": subset,
    }


def main(argv: list[str]) -> None:
    document_path, commit = argv
    document = json.loads(Path(document_path).read_text(encoding="utf-8"))
    target = Path(__file__).with_name("twilio_api_v2010.subset.json")
    text = json.dumps(extract(document, commit), indent=1, ensure_ascii=False, sort_keys=True)
    target.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
