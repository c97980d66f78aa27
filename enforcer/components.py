"""The enforcer's long-lived parts, built once per worker process and attached to the app."""

from __future__ import annotations

import logging

from flask import Flask

from regate.common.money import usd_to_nanos

from .budgets import Budgets
from .credentials import Authenticator, Facts
from .decision_cache import DecisionCache
from .decisions import OpaClient
from .ratelimit import RateLimiter, RedisLimiter, SqliteLimiter
from .settings import Settings
from .spend import SpendWriter
from .state_sync import BlockSync
from .store import GLOBAL, Store
from .stream_drains import StreamDrains
from .team_facts import TeamFacts
from .tokens import TokenVerifier
from .upstreams import Upstreams

log = logging.getLogger("regate")


class Components:
    """Store, OPA client, JWT verifier, upstreams, spend writer, stream drains and block sync of one worker."""

    def __init__(self, settings: Settings):
        self.settings = settings
        config = settings.config
        policy = config.policy
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.from_url(settings.database_url, default_sqlite_path=str(settings.sqlite_path))
        self.opa = OpaClient(settings.opa_url, timeout=settings.opa_timeout)
        self.verifier = TokenVerifier(settings.jwt) if settings.jwt else None
        self.authenticator = Authenticator(master_key=settings.master_key, store=self.store, verifier=self.verifier,
                                           jwt_enabled=bool(policy.jwt_enabled.value),
                                           key_cache_ttl=settings.key_cache_ttl)
        self.facts = Facts(self.store, policy, teams=TeamFacts(self.store, policy, ttl=settings.user_cache_ttl),
                           ttl=settings.user_cache_ttl)
        self.upstreams = Upstreams(config.deployments, environ=settings.environ)
        self.budgets = Budgets(
            self.store, policy, user_id=self.facts.user_id,
            proxy_budget=config.budgets.proxy_max_budget.value is not None,
            end_user_default_budget=config.budgets.max_end_user_budget.value is not None, ttl=settings.budget_cache_ttl,
            writes=lambda: self.spend.writes,
        )
        self.limiter: RateLimiter = (RedisLimiter(settings.redis_url) if settings.redis_url
                                     else SqliteLimiter(settings.ratelimit_path))
        # The writer's thread gets its own engine: no connection pool is shared with the event loop.
        self.spend_store = Store.from_url(settings.database_url, default_sqlite_path=str(settings.sqlite_path), pool_size=2)
        self.spend = SpendWriter(self.spend_store, spool_dir=settings.spool_dir, on_commit=self.budgets.committed)
        self.drains = StreamDrains()
        self.block_sync = BlockSync(self.store, self.opa, poll_interval=settings.state_poll_interval,
                                    check_interval=settings.state_check_interval)
        self.decisions = DecisionCache(self.opa, ttl=settings.decision_cache_ttl,
                                       generation=lambda: self.block_sync.generation)

    def start(self) -> None:
        self.store.migrate()
        self._sync_proxy_budget()
        self.spend.start()
        self.block_sync.start()
        if self.settings.jwt and not self.settings.config.policy.jwt_enabled.value:
            log.warning("JWT_PUBLIC_KEY_URL is set but enable_jwt_auth is not true: JWTs are refused")

    def _sync_proxy_budget(self) -> None:
        """litellm_settings.max_budget/budget_duration into the store's ("global", "") limits: the
        spend writer counts the proxy's spend per that period (the policy holds the budget itself)."""
        budgets = self.settings.config.budgets
        amount = budgets.proxy_max_budget.value
        wanted = {"max_budget_nanos": None if amount is None else usd_to_nanos(amount),
                  "budget_duration": budgets.proxy_budget_duration.value}
        current = self.store.get_limits(*GLOBAL) or {}
        if any(current.get(name) != value for name, value in wanted.items()):
            self.store.set_limits(*GLOBAL, wanted)

    def close(self) -> None:
        """Stop background work and flush spend; safe to call twice."""
        self.block_sync.stop()
        self.drains.close()  # before the writer: a drain cut short still records its spend
        self.spend.close()
        self.limiter.close()
        self.upstreams.close()
        self.opa.close()
        for keyset in self.verifier.keysets() if self.verifier else ():
            keyset.close()
        self.store.close()
        self.spend_store.close()

    def init_app(self, app: Flask) -> None:
        app.extensions["regate"] = self
