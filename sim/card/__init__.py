"""The software My Number Card.

* ``apdu``: ISO 7816-4 command parsing and status words (card side).
* ``filesystem``: applications and EFs with access rules; ``layout``: the card's real AIDs,
  EFs and rules for the standard and face-auth profiles; ``cardos``: the card OS (``CardOS``).
* ``state``: persistent retry counters (atomic JSON file); ``keyops``: the RSA sign operation.
* ``persona``: persona TOML; ``numbers``: My Number check digit, era dates, check code B.
* ``pki``: test JPKI CA and terminal CA; ``issue``: personalisation of a card folder;
  ``images``: card photo (JP2) and text PNGs; ``deck``: a deck of personas from a face dataset.
* ``vpcd``: serving a card to pcscd; ``control``: the control port (server and ``CardControl``);
  ``__main__``: ``python -m sim.card serve``; ``station``: the cards of ``facehil sim up``.

Terminal authorization (face-auth cards) lives in ``drivers/terminal_auth.py``.
"""
