# METADATA
# title: regate audit batch
# description: >-
#   Decisions of the compiled policy (data.regate.authz) for many requests in one
#   query, for `regate explain`, `regate matrix` and `regate diff`. Loaded beside
#   the bundle as its own bundle (root regate_audit); it adds no logic of its own:
#   every decision is data.regate.authz.decision, evaluated by OPA.
package regate_audit.batch

import data.regate.authz
import data.regate.budgets
import data.regate.identity
import data.regate.routes

# METADATA
# title: Outcomes
# description: >-
#   [allow, status, reasons] of the decision for each OPA input in input.cases, in
#   order (the runtime state, data.regate_state, is what the Evaluator wrote into OPA).
# entrypoint: true
outcomes := [answer |
	some case in input.cases
	answer := _answer with input as case
]

# The decision's allow, status and reasons, without its message and subject (a fifth less work).
_answer := [authz.allow, authz.status, authz.reasons]

# METADATA
# title: Route profiles
# description: >-
#   What the built-in checks read of each path in input.paths: whether it is canonical,
#   which route tables (data.regate.tables.routes) list it, and whether it spends against
#   budgets. They read the path through nothing else (tests/audit/test_route_profiles.py
#   holds every generated module to that), so two paths with one profile get the same
#   decision from every caller, and the audit tools ask OPA about one path of each profile.
# entrypoint: true
route_profiles := [profile |
	some path in input.paths
	profile := _route_profile with input as {"request": {"path": path}}
]

_route_profile := {
	"canonical": routes.canonical,
	"tables": {key | some key, _ in data.regate.tables.routes; routes._in(key)},
	"spends": input.request.path in budgets.spending_routes,
}

# METADATA
# title: Explanations
# description: >-
#   The decision, every failing check's message (data.regate.authz.denials), the
#   order the checks run in, whether the route is public (data.regate.routes.public)
#   and the custom policies' denials (data.regate.custom_checks.denials, when the
#   config has custom policies), for each OPA input in input.cases.
# entrypoint: true
explanations := [explanation |
	some case in input.cases
	decision := authz.decision with input as case
	denials := authz.denials with input as case
	public := routes.public with input as case
	custom := _custom_denials with input as case
	explanation := {
		"decision": decision, "denials": denials, "reason_order": authz.reason_order, "public": public,
		"custom_denials": custom,
	}
]

# Custom policies judge only where the built-in checks let them (authz._custom_reasons).
_custom_denials := {code: denial |
	some code in authz.reasons
	not code in authz.reason_order
	denial := data.regate.custom_checks.denials[code]
}

# METADATA
# title: Facts
# description: >-
#   The facts the enforcer sends for each {"credential", "store"} in input.cases
#   (enforcer/credentials.py Facts): for a JWT, whether the user the policy derives
#   exists; and what the store knows about the teams, team aliases and organization
#   aliases the credential names and the spend it counts against their budgets
#   (store.teams, store.team_aliases, store.org_aliases, store.budgets).
#   A credential's facts do not depend on the request, so they are asked once each.
# entrypoint: true
facts := [object.union(_user_facts(case), object.filter(case.store, ["teams", "team_aliases", "org_aliases", "budgets"])) |
	some case in input.cases
]

_user_facts(case) := {"user_id": user, "user_exists": case.store.user_exists} if {
	case.credential.type == "jwt"
	user := identity.user_id with input as {"credential": case.credential}
	user != null
} else := {}
