"""`manage.py email_sandbox`: the command lives with the email provider."""

from integrations.email.sandbox_command import Command

__all__ = ["Command"]
