"""A lightweight charging station on the `ocpp` package for the dashboard tests: boots, reports
its connectors, starts a transaction on RemoteStartTransaction and meters it (power and
energy every `sample_s`) until RemoteStopTransaction."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Station(ChargePoint):
    connectors = 2
    power_w = 7400.0
    sample_s = 0.3

    def setup(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.energy_wh = 1000.0
        self.charging: dict[int, tuple[int, asyncio.Task]] = {}  # connector -> (tx id, meter task)
        self.tasks: set[asyncio.Task] = set()

    def later(self, coro: Any) -> None:
        """Run after our answer is sent, as a real station does."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def boot(self) -> None:
        await self.call(call.BootNotification(charge_point_model="Test", charge_point_vendor="H8"))
        for connector in range(self.connectors + 1):
            await self.status(connector, "Available")

    async def status(self, connector: int, status: str, error: str = "NoError") -> None:
        await self.call(call.StatusNotification(connector, error, status, timestamp=now()))

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, **rest: Any) -> call_result.RemoteStartTransaction:
        connector = rest.get("connector_id", 1)
        self.received.append(("RemoteStartTransaction", {"idTag": id_tag, **rest}))
        if connector in self.charging:
            return call_result.RemoteStartTransaction(status="Rejected")
        self.later(self.begin(connector, id_tag))
        return call_result.RemoteStartTransaction(status="Accepted")

    async def begin(self, connector: int, id_tag: str) -> None:
        await self.status(connector, "Preparing")
        answer = await self.call(
            call.StartTransaction(connector, id_tag, int(self.energy_wh), now())
        )
        meter = asyncio.get_running_loop().create_task(self.meter(connector, answer.transaction_id))
        self.charging[connector] = (answer.transaction_id, meter)
        await self.status(connector, "Charging")

    async def meter(self, connector: int, transaction_id: int) -> None:
        while True:
            await asyncio.sleep(self.sample_s)
            self.energy_wh += self.power_w * self.sample_s / 3600 * 60  # one minute per sample
            energy = {"measurand": "Energy.Active.Import.Register", "unit": "Wh"}
            power = {"measurand": "Power.Active.Import", "unit": "W"}
            sampled = [
                energy | {"value": f"{self.energy_wh:.1f}"},
                power | {"value": f"{self.power_w:.0f}"},
            ]
            values = [{"timestamp": now(), "sampledValue": sampled}]
            await self.call(call.MeterValues(connector, values, transaction_id))

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        self.received.append(("RemoteStopTransaction", {"transactionId": transaction_id}))
        for connector, (tx, _) in self.charging.items():
            if tx == transaction_id:
                self.later(self.end(connector))
                return call_result.RemoteStopTransaction(status="Accepted")
        return call_result.RemoteStopTransaction(status="Rejected")

    async def end(self, connector: int) -> None:
        transaction_id, task = self.charging.pop(connector)
        task.cancel()
        await self.call(
            call.StopTransaction(int(self.energy_wh), now(), transaction_id, reason="Remote")
        )
        await self.status(connector, "Finishing")
        await self.status(connector, "Available")

    def _accept(self, action: str, answer: Any, **payload: Any) -> Any:
        self.received.append((action, payload))
        return answer

    @on("Reset")
    def on_reset(self, **p: Any) -> Any:
        return self._accept("Reset", call_result.Reset(status="Accepted"), **p)

    @on("UnlockConnector")
    def on_unlock(self, **p: Any) -> Any:
        return self._accept("UnlockConnector", call_result.UnlockConnector(status="Unlocked"), **p)

    @on("ChangeAvailability")
    def on_availability(self, **p: Any) -> Any:
        answer = call_result.ChangeAvailability(status="Accepted")
        return self._accept("ChangeAvailability", answer, **p)

    @on("ChangeConfiguration")
    def on_change_configuration(self, **p: Any) -> Any:
        answer = call_result.ChangeConfiguration(status="Accepted")
        return self._accept("ChangeConfiguration", answer, **p)

    @on("GetConfiguration")
    def on_get_configuration(self, **p: Any) -> Any:
        key = {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
        answer = call_result.GetConfiguration(configuration_key=[key])
        return self._accept("GetConfiguration", answer, **p)

    @on("SetChargingProfile")
    def on_set_profile(self, **p: Any) -> Any:
        answer = call_result.SetChargingProfile(status="Accepted")
        return self._accept("SetChargingProfile", answer, **p)

    @on("UpdateFirmware")
    def on_update_firmware(self, **p: Any) -> Any:
        return self._accept("UpdateFirmware", call_result.UpdateFirmware(), **p)


@contextlib.asynccontextmanager
async def connected(ocpp_port: int, station_id: str, boot: bool = True) -> AsyncIterator[Station]:
    uri = f"ws://127.0.0.1:{ocpp_port}/ocpp/{station_id}"
    async with websockets.connect(uri, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        station = Station(station_id, ws, response_timeout=5)
        station.setup()
        task = asyncio.create_task(station.start())
        try:
            if boot:
                await station.boot()
            yield station
        finally:
            for _, meter in station.charging.values():
                meter.cancel()
            for pending in list(station.tasks):
                pending.cancel()
            task.cancel()
