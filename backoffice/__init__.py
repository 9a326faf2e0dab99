"""kesu."""
