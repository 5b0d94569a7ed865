"""What marks a task as a language model, for the loaders of its runs: they sit below the
task's own module (which imports them to evaluate), so they cannot import its class."""


class LanguageModelKind:
    """A base of `LanguageModelTask`: its runs (and its subclasses') load as language
    models."""
