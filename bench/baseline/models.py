"""The baseline's models: an Order-like row with the customer's name and phone on it, and a
PlainOrder with the same columns and no receivers (the request-path floor)."""

from decimal import Decimal

from django.db import models
from django.utils import timezone


class _OrderColumns(models.Model):
    number = models.CharField(max_length=40, unique=True)
    status = models.CharField(max_length=32, default="processing")
    first_name = models.CharField(max_length=100, default="")
    phone = models.CharField(max_length=32, default="")
    status_history = models.JSONField(default=list, blank=True)
    line_items = models.JSONField(default=list, blank=True)
    total_amount = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    tracking_number = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class BaseOrder(_OrderColumns):
    """Fires the SMS on a change to shipped (post_save → on_commit → send_sms.delay)."""


class PlainOrder(_OrderColumns):
    """Same columns, no receivers at all."""
