"""The private pcscd really serves two vpcd slots that PC/SC clients can see."""

from smartcard.System import readers

from sim.pcscd import _listening


def test_private_pcscd_lists_two_virtual_readers(pcscd):
    names = [str(r) for r in readers()]
    assert names == pcscd.reader_names
    assert _listening(pcscd.slot_port(0)) and _listening(pcscd.slot_port(1))
