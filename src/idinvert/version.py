"""The version of idinvert (``idinvert --version``, every manifest's ``environment``)."""

__version__ = "0.1.0"
