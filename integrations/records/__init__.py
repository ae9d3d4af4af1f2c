"""careflow records: the "Update record" step, which writes a run's answers back to the
patient's records through the models (signals, audit trail, clinic scoping)."""
