"""Pipeline stages as plain, typed Python: validate, dedupe, enrich, detect."""
