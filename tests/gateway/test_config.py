"""Settings read from the environment, refused with a clear message when unusable."""

import pytest

from dataclasses import replace

from gateway.config import Settings, SettingError, check_redis_url


def settings(**env) -> Settings:
    return Settings.from_env({"CONTACTGATE_HOME": "/tmp/cg-config-test", **env})


def test_linkage_thresholds_and_floor_are_read_from_the_environment():
    s = settings(CONTACTGATE_LINK_UPPER="0.99", CONTACTGATE_LINK_LOWER="0.2", CONTACTGATE_FIND_FLOOR="55")
    assert (s.link_upper, s.link_lower, s.find_floor) == (0.99, 0.2, 55)


@pytest.mark.parametrize("env, needle", [
    ({"CONTACTGATE_LINK_UPPER": "1.5"}, "CONTACTGATE_LINK_UPPER must be a probability"),
    ({"CONTACTGATE_LINK_LOWER": "abc"}, "CONTACTGATE_LINK_LOWER must be a probability"),
    ({"CONTACTGATE_LINK_UPPER": "0.3", "CONTACTGATE_LINK_LOWER": "0.4"}, "must be below CONTACTGATE_LINK_UPPER"),
    ({"CONTACTGATE_FIND_FLOOR": "101"}, "CONTACTGATE_FIND_FLOOR must be a score from 1 to 100"),
])
def test_unusable_linkage_settings_are_refused_by_name(env, needle):
    with pytest.raises(SettingError, match=needle):
        settings(**env)


def test_lockout_settings_are_read_and_a_global_limit_one_address_could_reach_is_refused():
    s = settings(CONTACTGATE_LOCKOUT_GLOBAL_FAILURES="80", CONTACTGATE_LOCKOUT_GLOBAL_MINUTES="30")
    assert (s.lockout_failures, s.lockout_global_failures, s.lockout_global_minutes) == (5, 80, 30)
    # 10 in a row, a 15-minute lock, a 60-minute window: one address can add 10 x (4 + 1) = 50
    with pytest.raises(SettingError, match="CONTACTGATE_LOCKOUT_GLOBAL_FAILURES .50. must be more than one address"):
        settings(CONTACTGATE_LOCKOUT_FAILURES="10")
    assert settings(CONTACTGATE_LOCKOUT_FAILURES="10", CONTACTGATE_LOCKOUT_GLOBAL_FAILURES="51").lockout_global_failures == 51


def test_sign_in_throttle_and_remembered_addresses_are_read_by_name():
    s = settings()
    assert (s.signin_per_minute, s.signin_concurrency, s.signin_known_source_days) == (10, 2, 30)
    s = settings(CONTACTGATE_SIGNIN_PER_MINUTE="4", CONTACTGATE_SIGNIN_CONCURRENCY="1",
                 CONTACTGATE_SIGNIN_KNOWN_SOURCE_DAYS="90")
    assert (s.signin_per_minute, s.signin_concurrency, s.signin_known_source_days) == (4, 1, 90)
    for variable in ("CONTACTGATE_SIGNIN_PER_MINUTE", "CONTACTGATE_SIGNIN_CONCURRENCY",
                     "CONTACTGATE_SIGNIN_KNOWN_SOURCE_DAYS"):
        with pytest.raises(SettingError, match=f"{variable} must be 1 or more"):
            settings(**{variable: "0"})


def test_the_console_keeps_a_thread_for_other_pages_whatever_the_sign_in_concurrency():
    from gateway.console.throttle import SignInGate

    def checks(**env) -> int:
        return SignInGate.from_settings(settings(**env), clock=lambda: None).concurrency

    assert checks() == 2
    assert checks(CONTACTGATE_SIGNIN_CONCURRENCY="8") == 3  # 4 threads by default
    assert checks(CONTACTGATE_THREADS="1") == 1


def test_no_officer_role_sees_a_shielded_childs_location_in_the_review_queue_unless_listed():
    assert settings().review_shield_roles == frozenset()
    assert settings(CONTACTGATE_REVIEW_SHIELD_ROLES=" data_quality ,").review_shield_roles == {"data_quality"}


def test_a_review_shield_role_that_is_not_an_officer_role_is_refused_by_name():
    # A practitioner role (CONTACTGATE_SHIELD_ROLES' kind) or a misspelling would grant nothing unseen.
    for value in ("designated safeguarding lead", "data-quality"):
        with pytest.raises(SettingError, match=r"CONTACTGATE_REVIEW_SHIELD_ROLES names .* not an officer role"):
            settings(CONTACTGATE_REVIEW_SHIELD_ROLES=value)


def test_without_redis_each_worker_allows_its_share_nodes_times_workers():
    assert settings().rate_shares == 1  # one node; `serve` sets its workers
    assert replace(settings(CONTACTGATE_NODES="3"), workers=4).rate_shares == 12
    with pytest.raises(SettingError, match="CONTACTGATE_NODES must be"):
        settings(CONTACTGATE_NODES="0")


def test_a_sentinel_url_is_read_with_every_sentinel_the_service_and_the_database():
    from gateway.store.redis_client import parse_sentinel_url

    url = "redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380/cgmaster/2?sentinel_password=other"
    check_redis_url(url)
    assert parse_sentinel_url(url) == {"sentinels": [("10.0.0.1", 26379), ("::1", 26380)], "service": "cgmaster",
                                       "db": 2, "username": None, "password": "s3cret",
                                       "sentinel_password": "other"}


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1/cgmaster", "redis+sentinel://127.0.0.1:26379/",
                                 "redis+sentinel://127.0.0.1:26379/cgmaster/zero"])
def test_a_bad_sentinel_url_is_refused_saying_what_it_should_look_like(url):
    with pytest.raises(SettingError, match="redis\\+sentinel://"):
        check_redis_url(url)
