"""Integrations with the places Python apps live: each module imports only what it integrates
with when it is imported, so the package itself needs none of them."""
