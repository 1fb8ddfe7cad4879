"""A simulated Modbus RTU energy meter (the slave side) for the simulated board.

It answers read requests for its model's register map (protocol.modbus.MAPS) with the values
it measures, integrates energy from the power the simulated EV draws, and can misbehave on
demand: `fault` = 'silent' (no answer), 'garbage' (noise instead of a frame), 'crc' (a frame
with a wrong CRC) or 'exception' (Modbus exception 4, slave device failure).
"""

from protocol import modbus

_MS_PER_HOUR = 3600000.0


class SimMeter:
    def __init__(self, model, address):
        self.model = model
        self.address = address
        self.blocks = modbus.register_map(model)
        self.phases = modbus.PHASES[model]
        self.fault = None
        self.voltage_v = [230.0, 230.0, 230.0]
        self.current_a = [0.0, 0.0, 0.0]
        self.power_w = 0.0
        self.frequency_hz = 50.0
        self.energy_wh = 0.0
        self.energy_export_wh = 0.0

    def measure(self, voltage_v3, current_a3):
        """Set the instantaneous per-phase voltages and currents; power follows (a single-phase
        meter sees phase 1 only). A negative current is power fed back: meters show current as
        a magnitude and the direction in the sign of power."""
        power = 0.0
        for phase in range(self.phases):
            self.voltage_v[phase] = voltage_v3[phase]
            self.current_a[phase] = abs(current_a3[phase])
            power += voltage_v3[phase] * current_a3[phase]
        self.power_w = power

    def advance(self, ms):
        """Integrate the present power over `ms` milliseconds into the energy registers."""
        energy = self.power_w * ms / _MS_PER_HOUR
        if energy >= 0:
            self.energy_wh += energy
        else:
            self.energy_export_wh -= energy

    def handle(self, request):
        """The reply to a request frame, or None (not for us, corrupt, or silent)."""
        parsed = modbus.parse_request(request)
        if parsed is None or parsed[0] != self.address or self.fault == "silent":
            return None
        _, function, register, count = parsed
        if self.fault == "exception":
            return modbus.encode_exception(self.address, function, modbus.SLAVE_DEVICE_FAILURE)
        data = self._registers(function, register, count)
        if data is None:
            return modbus.encode_exception(self.address, function, modbus.ILLEGAL_DATA_ADDRESS)
        reply = modbus.encode_response(self.address, function, data)
        if self.fault == "garbage":  # never a frame: 0xFF and 0x00 are not slave addresses
            return b"\xff\x00" * (len(reply) // 2)
        if self.fault == "crc":
            return reply[:-1] + bytes([reply[-1] ^ 0x5A])
        return reply

    def _registers(self, function, register, count):
        """Register bytes for a read inside one block of the map, else None."""
        for block_function, start, size, swapped, entries in self.blocks:
            if function == block_function and start <= register and register + count <= start + size:
                data = bytearray(2 * size)
                for field, phase, first, kind, scale in entries:
                    value = getattr(self, field)
                    value = (value if phase < 0 else value[phase]) / scale
                    if kind != modbus.F32:
                        value = int(round(value))
                    modbus.encode(data, 2 * (first - start), kind, value, swapped)
                return data[2 * (register - start) : 2 * (register - start + count)]
        return None
