"""Package the trained zoo runs into restore_nb/zoo/ and write their cards; then fill the figures from `bench zoo`.

usage: python tools/build_zoo.py add [NAME …]        # runs/zoo/NAME → restore_nb/zoo/NAME (weights, config, card)
       python tools/build_zoo.py figures ZOO_JSON    # the measured figures and speed into each card
"""
import json, platform, re, sys
from pathlib import Path

import torch

from restore_nb.core import write_json
from restore_nb.infer import ZOO_DIR, add_to_zoo, zoo_cards

ROOT = Path(__file__).resolve().parent.parent
BSDS = ('BSDS500 images (Arbeláez et al., UC Berkeley), distributed for non-commercial research use; the weights are '
        'released under the library\'s Apache-2.0 licence')
DATA = {'BSD400': f'BSD400: the 400 BSDS500 train+test pictures, 481×321 ({BSDS})',
        'Train400': f'Train400: the DnCNN training set, 400 grey 180×180 crops of BSDS pictures ({BSDS})'}
SUMMARY = {
    'denoise-rgb': 'Blind colour Gaussian denoiser (σ ∈ [0, 50], no σ input): Swin-UNet, tiny configuration.',
    'denoise-gray': 'Blind grey Gaussian denoiser (σ ∈ [0, 50], no σ input): Swin-UNet, tiny configuration.',
    'sr-x2': '×2 super-resolution of bicubically downscaled colour images: Swin-UNet, tiny configuration.',
    'sr-x4': '×4 super-resolution of bicubically downscaled colour images: Swin-UNet, tiny configuration.',
    'demosaic-bayer': 'Joint demosaicing and denoising of RGGB Bayer mosaics in linear light (noise σ ∈ [0, 10] given '
                      'to the network): DemosaicNet.',
    'demosaic-xtrans': 'Joint demosaicing and denoising of Fujifilm X-Trans mosaics in linear light (noise σ ∈ [0, 10] '
                       'given to the network): DemosaicNet.',
    'deblur-unrolled': 'Non-blind deblurring with a known kernel: unrolled Richardson–Lucy, 5 layers with CNN priors.',
    'deblur-blind': 'Blind deblurring (kernel estimated jointly, up to 31×31): unrolled Richardson–Lucy, 5 layers.',
}
LIMITS = {
    'deblur-blind': 'the kernel estimate is coarse; prefer deblur-unrolled when the kernel is known',
    'demosaic-bayer': 'expects a linear-light mosaic; trained on sRGB pictures converted to linear light',
    'demosaic-xtrans': 'expects a linear-light mosaic; trained on sRGB pictures converted to linear light',
}


def recipes() -> dict:
    "The `restore-nb train` command of each model, read from tools/train_zoo.sh."
    text = (ROOT/'tools'/'train_zoo.sh').read_text()
    out = {}
    for m in re.finditer(r'\[([\w-]+)\]="([^"]+)"', text):
        out[m.group(1)] = f"restore-nb train {m.group(2)} --out runs/zoo/{m.group(1)}"
    return out


def add(names):
    cmds = recipes()
    for n in names or sorted(cmds):
        run = ROOT/'runs'/'zoo'/n
        rec = json.loads((run/'run.json').read_text())
        if rec.get('status') != 'finished':
            print(f'{n}: run not finished ({rec.get("status")}); skipped')
            continue
        data = 'Train400' if 'Train400' in cmds[n] else 'BSD400'
        card = dict(summary=SUMMARY[n], limits=LIMITS.get(n, ''), figures=[],
                    training=dict(dataset=data, data=DATA[data], licence=BSDS, command=cmds[n],
                                  budget=f"{rec['config'].get('minutes')} CPU minutes ({rec['epochs']} epochs)",
                                  hardware=f'CPU, {torch.get_num_threads()} threads ({platform.machine()})',
                                  seconds=rec.get('seconds')))
        c = add_to_zoo(run, n, card)
        mb = c['weights']['bytes'] / 2 ** 20
        print(f"{n}: {c['parameters']:,} parameters, {mb:.1f} MB, {c['training']['budget']}")


def figures(zoo_json):
    res = json.loads(Path(zoo_json).read_text())
    for n, card in zoo_cards().items():
        rows = [r for r in res['per_image'] if r['model'] == n]
        if not rows: continue
        card['figures'] = [dict(test=r['test'], metric='PSNR (dB)', value=r['psnr'],
                                baseline=f"{r['baseline']} {r['baseline_psnr']:.2f}", target=r['target'], met=r['met'])
                           for r in rows]
        best = max(rows, key=lambda r: r['gain'])
        card['headline'] = f"{best['test']}: {best['psnr']:.2f} dB ({best['gain']:+.2f} vs {best['baseline']})"
        sp = res.get('speed_s_per_mp', {}).get(n)
        if sp is not None:
            card['speed'] = f"{sp} s/MP on CPU ({res['protocol']['threads']} threads), 512×512 input"
        write_json(card, ZOO_DIR/n/'card.json')
        print(n, card['headline'])


if __name__ == '__main__':
    if sys.argv[1] == 'add': add(sys.argv[2:])
    elif sys.argv[1] == 'figures': figures(sys.argv[2])
    else: sys.exit(__doc__)
