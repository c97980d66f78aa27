# METADATA
# title: Only my tenant's tokens
# description: >-
#   LiteLLM's custom_validate example as a custom policy: a JWT must carry the tenant_id
#   my-unique-tenant and the claim proxy-admin in its `claims` list.
package regate.custom.custom_validate

allowed_tenants := {"my-unique-tenant"}

allowed_claims := {"proxy-admin"}

deny contains {"code": "tenant_not_allowed", "message": "Invalid JWT token: tenant is not allowed", "status": 403} if {
	input.credential.type == "jwt"
	not input.credential.claims.tenant_id in allowed_tenants
}

deny contains {"code": "claims_not_allowed", "message": "Invalid JWT token: no allowed claim", "status": 403} if {
	input.credential.type == "jwt"
	not _has_allowed_claim
}

_has_allowed_claim if {
	some claim in input.credential.claims.claims
	claim in allowed_claims
}
