"""The stream worker: decode, validate (and later dedupe, enrich, detect)."""
