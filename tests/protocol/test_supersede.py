"""The agent's answer to being replaced by a twin: longer waits, then giving up."""

from clustersync.protocol.supersede import SupersedePolicy


def test_each_replacement_in_a_row_waits_twice_as_long_up_to_the_ceiling() -> None:
    policy = SupersedePolicy(initial=5.0, ceiling=15.0, limit=10)
    assert [policy.replaced() for _ in range(4)] == [5.0, 10.0, 15.0, 15.0]


def test_the_limit_ends_the_streak_with_giving_up() -> None:
    policy = SupersedePolicy(initial=1.0, ceiling=60.0, limit=3)
    assert policy.replaced() == 1.0
    assert policy.replaced() == 2.0
    assert policy.replaced() is None


def test_another_kind_of_disconnect_starts_the_count_again() -> None:
    policy = SupersedePolicy(initial=1.0, ceiling=60.0, limit=3)
    policy.replaced()
    policy.replaced()
    policy.disconnected_otherwise()
    assert policy.replaced() == 1.0
    assert policy.streak == 1
