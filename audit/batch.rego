# METADATA
# title: regate audit batch
# description: >-
#   Decisions of the compiled policy (data.regate.authz) for many requests in one
#   query, for `regate explain`, `regate matrix` and `regate diff`. Loaded beside
#   the bundle as its own bundle (root regate_audit); it adds no logic of its own:
#   every decision is data.regate.authz.decision, evaluated by OPA.
package regate_audit.batch

import data.regate.authz
import data.regate.identity

# METADATA
# title: Outcomes
# description: >-
#   [allow, status, reasons] of each case in input.cases, in order. A case is
#   {"input": <the OPA input>, "store": {"user_exists", "team_models"}}: with a
#   store, the facts are what the enforcer would send for that credential.
# entrypoint: true
outcomes := [[d.allow, d.status, d.reasons] |
	some case in input.cases
	d := authz.decision with input as _input(case) with data.regate_state as input.state
]

# METADATA
# title: Explanations
# description: >-
#   The decision, every failing check's message (data.regate.authz.denials) and
#   the order the checks run in, for each case in input.cases.
# entrypoint: true
explanations := [explanation |
	some case in input.cases
	doc := _input(case)
	decision := authz.decision with input as doc with data.regate_state as input.state
	denials := authz.denials with input as doc with data.regate_state as input.state
	explanation := {"decision": decision, "denials": denials, "reason_order": authz.reason_order}
]

_input(case) := case.input if not case.store

_input(case) := object.union(case.input, {"facts": _facts(case)}) if case.store

# The enforcer's facts (enforcer/credentials.py Facts): for a JWT, whether the user the
# policy derives exists, and the models of the team it derives when that team has some.
_facts(case) := object.union(_user_facts(case), _team_facts(case))

_user_facts(case) := {"user_id": user, "user_exists": case.store.user_exists} if {
	case.input.credential.type == "jwt"
	user := identity.user_id with input as case.input
	user != null
} else := {}

_team_facts(case) := {"team_id": team, "team_models": case.store.team_models} if {
	case.input.credential.type == "jwt"
	count(case.store.team_models) > 0
	team := identity.team_id with input as case.input
	team != null
} else := {}
