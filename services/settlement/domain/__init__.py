"""Settlement domain: apportionment, double-entry postings, netting and statements (pure)."""
