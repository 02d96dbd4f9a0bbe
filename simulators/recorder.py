"""Apollo's onboard recorder (the data storage equipment, DSE): how much it holds and how
fast it is dumped, from its tape.

Source: astp-facts.md, "Onboard recorder (DSE)" (December 2026 additions): about 2 h of
low bit rate (1.6 kbit/s, tape at 3.75 in/s) or about 30 min of high bit rate (51.2 kbit/s,
15 in/s), dumped at 120 in/s, i.e. 32x LBR or 8x HBR. Both capacities are the same tape:
2 h x 3.75 in/s = 30 min x 15 in/s = 27,000 in (2,250 ft).

The link (simulators/link.py) keeps the recording in tape: an HBR frame (15 in/s, 50
frames/s) takes 0.3 in, an LBR frame (3.75 in/s, 5 frames/s) 0.75 in; a full tape holds
30 min of HBR, 2 h of LBR or a mix, and is dumped at 120 in/s whatever it holds, so an LBR
stretch comes down at 32x its real time and an HBR one at 8x.
"""

from __future__ import annotations

TAPE_IN = 27_000.0  # inches of usable tape (2 h at 3.75 in/s = 30 min at 15 in/s)
LBR_RECORD_IPS = 3.75  # in/s recording low bit rate (1.6 kbit/s)
HBR_RECORD_IPS = 15.0  # in/s recording high bit rate (51.2 kbit/s)
DUMP_IPS = 120.0  # in/s playing back to the ground

LBR_CAPACITY_S = TAPE_IN / LBR_RECORD_IPS  # 7200 s: about 2 h of LBR
HBR_CAPACITY_S = TAPE_IN / HBR_RECORD_IPS  # 1800 s: about 30 min of HBR
LBR_DUMP_RATE = DUMP_IPS / LBR_RECORD_IPS  # 32x
HBR_DUMP_RATE = DUMP_IPS / HBR_RECORD_IPS  # 8x
RECORD_IPS = {"hbr": HBR_RECORD_IPS, "lbr": LBR_RECORD_IPS}  # tape speed by stream
