"""Segments: a clinic's patients chosen by a saved filter over them and their records.

`segment_patients` is the one way to read a segment's members: broadcasts stream it in
batches (by primary key), the admin counts it live. It must stay a single SQL query (no
per-patient Python), so that a 100,000-patient segment is counted and streamed cheaply.
"""

from django.db.models import QuerySet

from patients.models import Patient
from workflows.models import Segment


def segment_patients(*, segment: Segment) -> QuerySet[Patient]:
    """The segment's members now: the clinic's patients its filter matches (an empty filter
    matches every patient of the clinic)."""
    # The filter's translation to SQL comes with the segment fields (issue 19, item 1).
    return Patient.objects.filter(organization_id=segment.organization_id)
