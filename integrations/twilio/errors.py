"""Twilio error codes a clinic admin may meet, explained in words they can act on."""

EXPLANATIONS: dict[str, str] = {
    "20003": "Twilio rejected the credentials: check the Account SID and Auth Token.",
    "20008": "These are Twilio's test credentials: Twilio sends nothing with them and will "
    "not say what became of a message. Use the account's live Auth Token.",
    "20429": "Twilio asked us to slow down (too many requests); retried automatically.",
    "20500": "Twilio had an internal error; the outcome was checked before any resend.",
    "21211": "The recipient's phone number is not a valid mobile number.",
    "21212": "The sender number is not a valid phone number, short code or sender ID.",
    "21408": "Sending to this country or region is not enabled on the Twilio account.",
    "21606": "The sender number is not owned by this Twilio account or cannot send SMS.",
    "21609": "Twilio cannot reach careflow's status-callback address (CAREFLOW_PUBLIC_URL is "
    "not a public https URL): texts go out without delivery reports and their status is "
    "checked by polling. Set CAREFLOW_PUBLIC_URL to careflow's public address.",
    "21610": "The recipient replied STOP to this sender; they have been opted out.",
    "21611": "The sender's queue at Twilio is full (about 10 hours of backlog); retried "
    "automatically.",
    "21612": "Twilio cannot route a text from this sender to this recipient (e.g. a number "
    "of another country, or a carrier the sender cannot reach).",
    "21614": "The recipient's number cannot receive SMS (e.g. a landline).",
    "21617": "The message is longer than 1,600 characters.",
    "21659": "The sender number is not a Twilio number on this account.",
    "30003": "Unreachable handset: the phone is off or out of coverage.",
    "30004": "The recipient's carrier blocked the message (or the recipient blocked the sender).",
    "30005": "Unknown destination handset: the number may no longer be in service.",
    "30006": "The number is a landline or otherwise cannot receive SMS.",
    "30007": "The carrier filtered the message as spam or unwanted content.",
    "30008": "Unknown delivery error reported by the carrier.",
    "30034": "The sender number is not registered for US A2P 10DLC messaging.",
}


# 20003 Authenticate (HTTP 401): the Account SID or Auth Token is wrong or was rotated.
CREDENTIALS_ERROR_CODES = frozenset({"20003"})


def error_explanation(code: str) -> str:
    return EXPLANATIONS.get(str(code), "")
