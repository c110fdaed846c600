#!/usr/bin/env bash
# Transfer learning on Fashion-MNIST, offline (Debian's dataset-fashion-mnist package):
#   1. pretrain a small CNN on classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat);
#   2. write 50 labelled training images per class of classes 5-9 (Sandal, Shirt, Sneaker,
#      Bag, Ankle boot) and all 5,000 test images of those classes as PNG class folders;
#   3. transfer the CNN's convolutional features to classes 5-9 (stage 1: new head on the
#      frozen base; stage 2: all layers at a lower learning rate), against the same network
#      trained from scratch on the same 250 images (--compare-scratch).
# Usage: bash examples/transfer_fashion_mnist/run.sh [OUT=runs/transfer_fashion_mnist] [SEED=0]
# (uses `mlnnkit` when installed, else `python -m mlnnkit`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/transfer_fashion_mnist}"
seed="${2:-0}"
if command -v mlnnkit >/dev/null 2>&1; then mlnnkit=(mlnnkit); else mlnnkit=(python -m mlnnkit); fi

[ -f "$out/pretrain/model.keras" ] || "${mlnnkit[@]}" train "$here/pretrain.toml" --out "$out/pretrain"
[ -d "$out/images/test" ] || python "$here/write_images.py" "$out/images"
"${mlnnkit[@]}" transfer --base "$out/pretrain/model.keras" --cut-at flatten \
    --data "$out/images/train" --test-data "$out/images/test" -o "$out/transfer_seed$seed" \
    --lr 3e-3 --epochs 100 --fine-tune-lr 1e-4 --fine-tune-epochs 50 --patience 10 \
    --compare-scratch --seed "$seed"
