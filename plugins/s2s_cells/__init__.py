"""The built-in cells. They are registered through the `s2s.cells` entry-point group in
s2s's own pyproject.toml, exactly as a third-party package registers its cells."""
