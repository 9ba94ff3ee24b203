"""Write each zoo card's `input_profile`: blind noise-σ and blur estimates of 200 of the model's training inputs,
rebuilt from the card's recipe on its own training set (restore_nb.serve.monitor.card_profile). The server's drift
check compares recent requests with it.

    RESTORE_NB_DATA=../shared/data python tools/zoo_profiles.py [NAME ...]
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from restore_nb.core import write_json  # noqa: E402
from restore_nb.infer.zoo import ZOO_DIR, zoo_cards  # noqa: E402
from restore_nb.serve.monitor import card_profile  # noqa: E402

for name, card in zoo_cards().items():
    if sys.argv[1:] and name not in sys.argv[1:]:
        continue
    card['input_profile'] = card_profile(card)
    write_json(card, ZOO_DIR / name / 'card.json')
    p = card['input_profile']
    print(
        f"{name}: {len(p['noise_sigma'])} training inputs of {p['data']} ({p['size']} px): median σ "
        f"{np.median(p['noise_sigma']):.1f}, median blur {np.median(p['blur']):.3f}"
    )
