"""Keep each configured stream created, published and leased."""
