"""The officer roles, by name: what an officer account may hold (gateway.officers) and what a setting
may name (gateway.config: CONTACTGATE_REVIEW_SHIELD_ROLES). Kept apart from the accounts so that
reading the settings does not load them (their tables, argon2, TOTP), and so that the accounts,
which read the settings, are not needed by them. Which role may do what is decided where it is
done (gateway.trust.registry, the commands, the console)."""

ROLES = ("officer", "senior_officer", "data_quality", "auditor")
