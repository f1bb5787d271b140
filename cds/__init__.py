"""Clinical decision support for plasma exchange in natalizumab-associated PML."""

__version__ = "0.1.0"
