"""`s2s serve`: a loaded run (`s2s.load`) behind an HTTP JSON API, with dynamic batching
of concurrent requests (docs/serving.md). Needs the optional extra ``s2s[serve]``."""
