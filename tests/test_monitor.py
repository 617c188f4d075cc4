from ppo_term.monitor import Monitor, check


def step(n, kl=1.0, entropy=2.0, length=40.0, reward=0.0):
    return {"step": n, "kl": kl, "entropy": entropy, "response_length": length, "reward": reward}


def test_each_warning_by_its_rule():
    assert check([step(1, kl=13.0)], kl_target=6.0).keys() == {"kl"}
    assert check([step(1, kl=11.0)], kl_target=6.0) == {}
    # entropy under a quarter of step 1's, from the third step on
    assert "entropy" in check([step(1), step(2), step(3, entropy=0.4)])
    assert "entropy" not in check([step(1), step(2, entropy=0.4)])
    # length halves while reward rises: reward hacking; halving with falling reward is not flagged
    assert "length" in check([step(1), step(2), step(3, length=15.0, reward=0.5)])
    assert "length" not in check([step(1), step(2), step(3, length=15.0, reward=-0.5)])


def test_monitor_warns_once_per_episode():
    mon, history = Monitor(kl_target=6.0), []
    seen = []
    for n, kl in enumerate([1.0, 13.0, 14.0, 15.0, 2.0, 20.0], 1):
        history.append(step(n, kl=kl))
        seen.append(len(mon.new_warnings(history)))
    # starts at step 2, lasts to step 4 silently, clears at 5, starts again at 6
    assert seen == [0, 1, 0, 0, 0, 1]
