"""careflow's own settings plus the baseline app, so bench/request_path.py can time a
careflow trigger save, a receiver-less save and the baseline's save+publish in one process,
on one database connection."""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.baseline"]
BENCH_TWILIO_ACCOUNT_SID = "AC" + "0" * 32
BENCH_TWILIO_AUTH_TOKEN = "bench-token"  # noqa: S105
BENCH_TWILIO_FROM = "+15005550006"
