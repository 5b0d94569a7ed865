"""The task types (translation, summarization, language_model, speech) and the registry
that finds them."""
