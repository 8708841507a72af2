"""A PCI function as a vfio-user server exposes it: config space, BARs, IRQ vectors, DMA.

A device model subclasses :class:`PciFunction` and implements ``bar_read``/``bar_write`` (and
optionally ``reset``). The transport serves config space from ``config`` through
``config_read``/``config_write``, forwards BAR accesses, maps ``set_irq`` levels onto the
client's INTx or MSI-X eventfds and fills ``dma`` with the client's DMA_MAP'd memory. It uses
only the public API below (``attach_irq_sink``/``irq_sink``, ``attach_dma_port``/``dma_port``).

QEMU virtualizes BAR addresses, the ROM BAR and the command register itself but forwards
config reads/writes, so the config space here only needs to be a plausible type-0 header with
a capability list; BAR sizing (write all-ones, read back the size mask) still works.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..memory import BusError, SparseRam

log = logging.getLogger(__name__)

PAGE_SIZE = mmap.PAGESIZE

# -- config-space header (type 0) offsets -----------------------------------------------------
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CACHE_LINE_SIZE = 0x0C
PCI_LATENCY_TIMER = 0x0D
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D

PCI_COMMAND_IO = 0x1
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_COMMAND_PARITY = 0x40
PCI_COMMAND_SERR = 0x100
PCI_COMMAND_INTX_DISABLE = 0x400
COMMAND_WMASK = (
    PCI_COMMAND_IO
    | PCI_COMMAND_MEMORY
    | PCI_COMMAND_MASTER
    | PCI_COMMAND_PARITY
    | PCI_COMMAND_SERR
    | PCI_COMMAND_INTX_DISABLE
)
PCI_STATUS_INTERRUPT = 0x08
PCI_STATUS_CAP_LIST = 0x10
STATUS_W1C = 0xF900  # parity/abort/SERR error bits: write 1 to clear

PCI_BASE_ADDRESS_SPACE_IO = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8

PCI_CAP_ID_MSIX = 0x11
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_FLAGS_MASKALL = 0x4000
MSIX_CAP_SIZE = 12
MSIX_ENTRY_SIZE = 16

CONFIG_SIZE = 256
EXT_CONFIG_SIZE = 4096
NUM_BARS = 6


@dataclass(frozen=True)
class BarSpec:
    """One BAR: size (power of two), kind, and optional sparse-mmap areas.

    ``mmap_areas`` are ``(offset, size)`` page-aligned windows of side-effect-free memory: the
    client mmaps them (no trap per access); the device updates them through
    :meth:`PciFunction.bar_memory`. Accesses anywhere else call ``bar_read``/``bar_write``.
    """

    size: int
    is64: bool = False
    prefetchable: bool = False
    io: bool = False
    mmap_areas: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        minimum = 4 if self.io else 16
        if self.size < minimum or self.size & (self.size - 1):
            raise ValueError(f"BAR size {self.size:#x} is not a power of two >= {minimum}")
        if self.io and (self.is64 or self.prefetchable or self.mmap_areas):
            raise ValueError("an I/O BAR cannot be 64-bit, prefetchable or mmapped")
        if not self.is64 and self.size > 1 << 31:
            raise ValueError("a 32-bit BAR cannot exceed 2 GiB")
        for off, size in self.mmap_areas:
            if off % PAGE_SIZE or size % PAGE_SIZE or size == 0 or off + size > self.size:
                raise ValueError(f"sparse-mmap area {off:#x}+{size:#x} is not page-aligned in BAR")

    @property
    def flag_bits(self) -> int:
        """The read-only low bits of the BAR register."""
        if self.io:
            return PCI_BASE_ADDRESS_SPACE_IO
        bits = PCI_BASE_ADDRESS_MEM_TYPE_64 if self.is64 else 0
        if self.prefetchable:
            bits |= PCI_BASE_ADDRESS_MEM_PREFETCH
        return bits


Bar = BarSpec


@dataclass(frozen=True)
class MsixCapability:
    """MSI-X: ``vectors`` table entries; table and PBA located in BARs of this function.

    QEMU emulates the table itself (it overlays it on the BAR) and forwards PBA reads to the
    server, which reads 0 there (no pending bits; docs/vfio-user.md): the BAR only has to exist
    and be large enough.
    """

    vectors: int
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int

    def __post_init__(self) -> None:
        if not 1 <= self.vectors <= 2048:
            raise ValueError("MSI-X supports 1..2048 vectors")
        if self.table_offset % 8 or self.pba_offset % 8:
            raise ValueError("MSI-X table and PBA offsets must be 8-byte aligned")

    @property
    def table_size(self) -> int:
        return self.vectors * MSIX_ENTRY_SIZE

    @property
    def pba_size(self) -> int:
        return (self.vectors + 63) // 64 * 8


class IrqSink:
    """What the transport plugs into a :class:`PciFunction` to receive level changes."""

    def level_changed(self, vector: int, level: bool, old_mask: int, new_mask: int) -> None:
        raise NotImplementedError


class DmaPort:
    """What the transport plugs in to reach client memory that has no fd (message based)."""

    async def dma_read(self, addr: int, size: int) -> bytes:
        raise NotImplementedError

    async def dma_write(self, addr: int, data: bytes) -> None:
        raise NotImplementedError


class PciFunction:
    """A PCI type-0 function: config space, up to six BARs, interrupt vectors, DMA window.

    Subclasses implement :meth:`bar_read`, :meth:`bar_write` and optionally :meth:`reset`.
    Callbacks run on the server's event loop and must return at once.
    """

    def __init__(
        self,
        *,
        vendor_id: int,
        device_id: int,
        class_code: int,
        revision: int = 0,
        subsystem_vendor_id: int = 0,
        subsystem_id: int = 0,
        bars: Mapping[int, BarSpec] | None = None,
        msix: MsixCapability | None = None,
        intx: bool = True,
        num_vectors: int | None = None,
        extended_config: bool = False,
    ) -> None:
        self.bars: dict[int, BarSpec] = dict(bars or {})
        self.msix = msix
        self.intx = intx
        if num_vectors is None:
            num_vectors = msix.vectors if msix else 1
        if num_vectors < 1:
            raise ValueError("a PCI function needs at least one interrupt vector")
        self.num_vectors = num_vectors
        self._check_bars()
        if msix is not None:
            self._check_msix(msix)

        size = EXT_CONFIG_SIZE if extended_config else CONFIG_SIZE
        self.config = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)
        self._next_cap = 0x40
        self._last_cap_ptr = PCI_CAPABILITY_LIST
        self._build_header(
            vendor_id, device_id, class_code, revision, subsystem_vendor_id, subsystem_id
        )
        if msix is not None:
            self.msix_cap_offset = self._add_msix(msix)
        else:
            self.msix_cap_offset = 0
        self._config_reset = bytes(self.config)

        self.dma = SparseRam()
        self._dma_port: DmaPort | None = None
        self._irq_levels = 0
        self._irq_sink: IrqSink | None = None

        self._bar_fds: dict[int, int] = {}
        self._bar_maps: dict[int, mmap.mmap] = {}
        for index, spec in self.bars.items():
            if spec.mmap_areas:
                fd = os.memfd_create(f"pci-bar{index}", os.MFD_CLOEXEC)
                os.ftruncate(fd, spec.size)
                self._bar_fds[index] = fd
                self._bar_maps[index] = mmap.mmap(fd, spec.size, mmap.MAP_SHARED)

    # -- construction -------------------------------------------------------------------
    def _check_bars(self) -> None:
        for index, spec in self.bars.items():
            if not 0 <= index < NUM_BARS:
                raise ValueError(f"BAR index {index} out of range")
            if spec.is64:
                if index == NUM_BARS - 1:
                    raise ValueError("a 64-bit BAR cannot be BAR5")
                if index + 1 in self.bars:
                    raise ValueError(f"BAR{index + 1} is the upper half of 64-bit BAR{index}")

    def _check_msix(self, m: MsixCapability) -> None:
        for bar, off, size in ((m.table_bar, m.table_offset, m.table_size),
                               (m.pba_bar, m.pba_offset, m.pba_size)):
            spec = self.bars.get(bar)
            if spec is None or spec.io or off + size > spec.size:
                raise ValueError(f"MSI-X structure {off:#x}+{size:#x} does not fit in BAR{bar}")
        if m.vectors < self.num_vectors:
            raise ValueError("fewer MSI-X vectors than device interrupt vectors")

    def _put(self, off: int, size: int, value: int) -> None:
        self.config[off : off + size] = value.to_bytes(size, "little")

    def _set_wmask(self, off: int, size: int, mask: int) -> None:
        self.wmask[off : off + size] = mask.to_bytes(size, "little")

    def _build_header(
        self, vendor: int, device: int, class_code: int, rev: int, svid: int, sid: int
    ) -> None:
        self._put(PCI_VENDOR_ID, 2, vendor)
        self._put(PCI_DEVICE_ID, 2, device)
        self._put(PCI_REVISION_ID, 1, rev)
        self._put(PCI_CLASS_PROG, 3, class_code & 0xFFFFFF)
        self._put(PCI_SUBSYSTEM_VENDOR_ID, 2, svid)
        self._put(PCI_SUBSYSTEM_ID, 2, sid)
        self._put(PCI_HEADER_TYPE, 1, 0)
        self._set_wmask(PCI_COMMAND, 2, COMMAND_WMASK)
        self.w1cmask[PCI_STATUS : PCI_STATUS + 2] = STATUS_W1C.to_bytes(2, "little")
        self._set_wmask(PCI_CACHE_LINE_SIZE, 1, 0xFF)
        self._set_wmask(PCI_LATENCY_TIMER, 1, 0xFF)
        self._set_wmask(PCI_INTERRUPT_LINE, 1, 0xFF)
        self._put(PCI_INTERRUPT_PIN, 1, 1 if self.intx else 0)
        for index, spec in self.bars.items():
            reg = PCI_BASE_ADDRESS_0 + 4 * index
            low_bits = 0x3 if spec.io else 0xF
            self._put(reg, 4, spec.flag_bits)
            self._set_wmask(reg, 4, ~(spec.size - 1) & 0xFFFFFFFF & ~low_bits)
            if spec.is64:
                self._set_wmask(reg + 4, 4, (~(spec.size - 1) >> 32) & 0xFFFFFFFF)

    def add_capability(self, cap_id: int, body: bytes, wmask: bytes | None = None) -> int:
        """Append a capability (``body`` excludes the 2-byte id/next header); return its offset."""
        size = 2 + len(body)
        off = self._next_cap
        if off + size > CONFIG_SIZE:
            raise ValueError("capability list does not fit in the 256-byte config space")
        self.config[off] = cap_id
        self.config[off + 1] = 0
        self.config[off + 2 : off + size] = body
        if wmask is not None:
            if len(wmask) != len(body):
                raise ValueError("wmask length must match the capability body")
            self.wmask[off + 2 : off + size] = wmask
        self.config[self._last_cap_ptr] = off
        self._last_cap_ptr = off + 1
        self._next_cap = (off + size + 3) & ~3
        status = int.from_bytes(self.config[PCI_STATUS : PCI_STATUS + 2], "little")
        self._put(PCI_STATUS, 2, status | PCI_STATUS_CAP_LIST)
        return off

    def _add_msix(self, m: MsixCapability) -> int:
        control = (m.vectors - 1) & 0x7FF
        body = (
            control.to_bytes(2, "little")
            + (m.table_offset | m.table_bar).to_bytes(4, "little")
            + (m.pba_offset | m.pba_bar).to_bytes(4, "little")
        )
        wmask = (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL).to_bytes(2, "little") + bytes(8)
        return self.add_capability(PCI_CAP_ID_MSIX, body, wmask)

    # -- config space --------------------------------------------------------------------
    @property
    def config_size(self) -> int:
        return len(self.config)

    def config_read(self, offset: int, size: int) -> bytes:
        """Config-space read; the status INTx bit reflects the interrupt line."""
        data = bytearray(self.config[offset : offset + size])
        bit = PCI_STATUS - offset
        if 0 <= bit < size and self._irq_levels and self.intx:
            data[bit] |= PCI_STATUS_INTERRUPT
        return bytes(data)

    def config_write(self, offset: int, data: bytes) -> None:
        """Config-space write honouring the writable and write-1-to-clear masks."""
        cfg, wm, w1c = self.config, self.wmask, self.w1cmask
        for i, b in enumerate(data):
            o = offset + i
            m = wm[o]
            v = (cfg[o] & ~m) | (b & m)
            v &= ~(b & w1c[o])
            cfg[o] = v & 0xFF

    def reset_config(self) -> None:
        self.config[:] = self._config_reset

    # -- BAR side (device model) ---------------------------------------------------------
    def bar_read(self, bar: int, offset: int, size: int) -> int:
        """Read ``size`` (1/2/4/8) bytes at ``offset`` of BAR ``bar``. Override."""
        return 0

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        """Write ``size`` bytes at ``offset`` of BAR ``bar``. Override."""

    def reset(self) -> None:
        """Device reset (VFIO_USER_DEVICE_RESET). Override; config space is already reset."""

    def bar_memory(self, bar: int) -> memoryview:
        """Shared memory behind BAR ``bar``'s sparse-mmap areas (offsets are BAR offsets)."""
        return memoryview(self._bar_maps[bar])

    def bar_memfd(self, bar: int) -> int | None:
        return self._bar_fds.get(bar)

    # -- interrupts ------------------------------------------------------------------------
    def set_irq(self, vector: int, level: bool) -> None:
        """Drive interrupt ``vector`` to ``level`` (level-triggered, like a wire)."""
        if not 0 <= vector < self.num_vectors:
            raise ValueError(f"interrupt vector {vector} out of range 0..{self.num_vectors - 1}")
        old = self._irq_levels
        new = old | (1 << vector) if level else old & ~(1 << vector)
        if new == old:
            return
        self._irq_levels = new
        sink = self._irq_sink
        if sink is not None:
            sink.level_changed(vector, level, old, new)

    def irq_level(self, vector: int) -> bool:
        return bool(self._irq_levels >> vector & 1)

    @property
    def irq_levels(self) -> int:
        """Bit mask of asserted vectors."""
        return self._irq_levels

    def attach_irq_sink(self, sink: IrqSink | None) -> None:
        """Plug in (None: unplug) what receives level changes: the transport's IRQ router."""
        self._irq_sink = sink

    @property
    def irq_sink(self) -> IrqSink | None:
        """The attached IRQ sink (a transport detaches only its own)."""
        return self._irq_sink

    # -- DMA ---------------------------------------------------------------------------------
    def attach_dma_port(self, port: DmaPort | None) -> None:
        """Plug in (None: unplug) the message-based path to client memory without an fd."""
        self._dma_port = port

    @property
    def dma_port(self) -> DmaPort | None:
        """The attached DMA port (a transport detaches only its own)."""
        return self._dma_port

    async def dma_read(self, addr: int, size: int) -> bytes:
        """Read client memory: directly if fd-mapped, else by DMA_READ messages.

        The synchronous ``self.dma`` (a PhysMem) covers fd-mapped memory only and raises
        BusError for regions mapped without an fd.
        """
        try:
            return self.dma.read(addr, size)
        except BusError:
            if self._dma_port is None:
                raise
        return await self._dma_port.dma_read(addr, size)

    async def dma_write(self, addr: int, data: bytes) -> None:
        try:
            self.dma.write(addr, data)
            return
        except BusError:
            if self._dma_port is None:
                raise
        await self._dma_port.dma_write(addr, bytes(data))

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the sparse-mmap memfds."""
        for m in self._bar_maps.values():
            try:
                m.close()
            except BufferError:
                log.debug("BAR memory still referenced; left to the garbage collector")
        for fd in self._bar_fds.values():
            os.close(fd)
        self._bar_maps.clear()
        self._bar_fds.clear()

