package regate.custom.custom_validate_test

import data.regate.authz
import data.regate.custom.custom_validate

state := {"blocked_teams": {}, "sync_id": "test"}

token(claims) := {
	"request": {"method": "POST", "path": "/v1/chat/completions"},
	"credential": {"type": "jwt", "claims": claims},
	"facts": {"user_id": "my-unique-user", "user_exists": true},
}

test_the_docs_expected_jwt_is_refused if {
	d := authz.decision with input as token({"sub": "my-unique-user", "tenant_id": "INVALID_TENANT", "claims": ["proxy-admin"]})
		with data.regate_state as state
	d.allow == false
	d.status == 403
	d.reasons == ["tenant_not_allowed"]
	d.message == "Invalid JWT token: tenant is not allowed"
}

test_my_tenant_with_the_claim_is_allowed if {
	d := authz.decision with input as token({"sub": "my-unique-user", "tenant_id": "my-unique-tenant", "claims": ["proxy-admin"]})
		with data.regate_state as state
	d.allow == true
}

test_my_tenant_without_the_claim_is_refused if {
	d := authz.decision with input as token({"sub": "my-unique-user", "tenant_id": "my-unique-tenant", "claims": ["viewer"]})
		with data.regate_state as state
	d.reasons == ["claims_not_allowed"]
}

test_built_in_denials_come_first if {
	d := authz.decision with input as token({"sub": "my-unique-user", "tenant_id": "INVALID_TENANT"})
		with input.request.path as "/key/generate"
		with data.regate_state as state
	d.reasons == ["route_not_allowed", "claims_not_allowed", "tenant_not_allowed"]
	d.status == 403
}

test_the_master_key_is_not_checked if {
	count(custom_validate.deny) == 0 with input as {"request": {"method": "POST", "path": "/x"}, "credential": {"type": "master_key"}}
}
