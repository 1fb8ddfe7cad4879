"""Power cuts: SIGKILL the firmware's micropython process at random moments during sessions and
restart it on the same flash. Every transaction's StartTransaction, MeterValues and
StopTransaction must reach the central system exactly once and in order (the central system
sees retransmissions and recognises them; cp_centralsystem de-duplicates them as one would)."""

import asyncio
import random

from ocpp.v16 import call

from tests.cp_station import paired

CYCLES = 8


def test_sessions_survive_power_cuts_exactly_once_in_order(tmp_path):
    rng = random.Random(20261126)

    async def scenario():
        async with paired(tmp_path) as (cs, fw):
            for cycle in range(CYCLES):
                await fw.start()
                await cs.wait(lambda n=cycle: cs.connections == n + 1, what="connection")
                if cycle == 0:
                    await cs.wait(lambda: len(cs.status) == 3, what="boot")
                    reply = await cs.call(
                        call.ChangeConfiguration(key="MeterValueSampleInterval", value="1")
                    )
                    assert reply.status == "Accepted"
                if rng.random() < 0.2:
                    await asyncio.sleep(rng.uniform(0, 0.3))  # a cut during boot
                    await fw.kill()
                    continue
                await fw.command("ev 1 C")
                await cs.wait(lambda: cs.status.get(1, ("",))[0] == "Preparing", what="plug")
                reply = await cs.call(call.RemoteStartTransaction(id_tag=f"PC{cycle}"))
                assert reply.status == "Accepted"
                await asyncio.sleep(rng.uniform(0, 2.5))  # the moment of the cut, at random
                await fw.kill()
            # Back for good: whatever was queued is delivered.
            await fw.start()

            def all_stopped():
                starts = {tx for action, tx, _ in cs.log if action == "StartTransaction"}
                stops = {tx for action, tx, _ in cs.log if action == "StopTransaction"}
                return starts and starts == stops

            await cs.wait(all_stopped, timeout=60, what="every transaction stopped")
        return cs

    cs = asyncio.run(asyncio.wait_for(scenario(), 200))
    by_tx: dict[int, list[tuple[str, dict]]] = {}
    for action, tx, payload in cs.log:
        by_tx.setdefault(tx, []).append((action, payload))
    assert len(by_tx) >= 3, "too few transactions got started to mean anything"
    for tx, messages in by_tx.items():
        actions = [a for a, _ in messages]
        assert actions[0] == "StartTransaction" and actions[-1] == "StopTransaction", actions
        assert actions.count("StartTransaction") == 1 and actions.count("StopTransaction") == 1
        times = [p["meterValue"][0]["timestamp"] for a, p in messages if a == "MeterValues"]
        assert times == sorted(times) and len(set(times)) == len(times), (tx, times)
        start, stop = messages[0][1], messages[-1][1]
        assert stop["reason"] in ("PowerLoss", "EVDisconnected", "Local"), stop
        assert start["timestamp"] <= stop["timestamp"]
        assert stop["meterStop"] >= start["meterStart"]
    # Delivery order follows the order things happened: a transaction's messages are not
    # interleaved with another's on the same connector.
    order = [tx for _, tx, _ in cs.log]
    for tx in by_tx:
        first, last = order.index(tx), len(order) - 1 - order[::-1].index(tx)
        assert set(order[first : last + 1]) == {tx}, "transactions interleaved"
