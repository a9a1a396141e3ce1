"""The scheme file: parties, fees, apportionment, funding, entitlements and rewards
(docs/scheme.md). Read by settlement and by accounts; pure data plus one loader."""
