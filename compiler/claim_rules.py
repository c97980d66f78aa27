"""Which rule of identity.rego reads each claim field the config may name.

The renderer writes these rules; the generated tests replace them (`with ... as`) to read a
claim the config leaves unset, as if it were set.
"""

# (rule in identity.rego, AuthPolicy field). Ids must be non-empty strings when present; the
# team list is checked on its own.
ID_CLAIM_RULES = (("_team_id_value", "team_field"), ("_user_id_value", "user_field"), ("_org_id_value", "org_field"),
                  ("_end_user_id_value", "end_user_field"), ("_email_value", "email_field"),
                  ("_team_alias_value", "team_alias_field"), ("_org_alias_value", "org_alias_field"),
                  ("_object_id_value", "object_id_field"))
CLAIM_RULES = ID_CLAIM_RULES + (("_team_ids_value", "team_ids_field"), ("_roles_value", "roles_field"),
                                ("_user_roles_value", "user_roles_field"))
RULE_OF = {attr: rule for rule, attr in CLAIM_RULES}
