"""Plain PyTorch loops written from seed 001's description: the baseline tlzoo is measured against.

Seed 001 fine-tunes a pretrained CNN on an ImageFolder-like tree: a Dataset
that opens each image with PIL, Resize([300,300]) + RandomRotation(45) +
CenterCrop(224) + random flips + RandomGrayscale(0.1) + ToTensor + ImageNet
Normalize for training, Resize([224,224]) for testing; every backbone
parameter frozen (requires_grad False), a new classifier, Adam(lr 1e-3) on the
classifier only, StepLR(5, 0.5), batch 64, DataLoader defaults (no workers),
`model.train()` while training (so frozen BatchNorm statistics still move),
evaluation every epoch, the best accuracy kept. The backbone here is the
shipped EfficientNet-Lite0, built through tlzoo's own plugin so its weights
are those tlzoo uses. Nothing here uses tlzoo's engine.

    python benchmarks/seed_loop.py head --data ../shared/datasets/flowers12 --epochs 10 --json out.json
    python benchmarks/seed_loop.py full --data ... --epochs 2 --json out.json

`plain_eval` is the plain fp32 NCHW evaluation loop the predict benchmark compares with.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SUFFIXES = {".jpg", ".jpeg", ".png"}

TRAIN_TRANSFORM = transforms.Compose([
    transforms.Resize([300, 300]),
    transforms.RandomRotation(45),
    transforms.CenterCrop(224),
    transforms.RandomHorizontalFlip(),
    transforms.RandomVerticalFlip(),
    transforms.RandomGrayscale(0.1),
    transforms.ToTensor(),
    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
])
TEST_TRANSFORM = transforms.Compose([
    transforms.Resize([224, 224]),
    transforms.ToTensor(),
    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
])


def list_images(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) of every image under folder/CLASS/, classes sorted by name."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    items = [(path, index) for index, name in enumerate(classes)
             for path in sorted((folder / name).iterdir()) if path.suffix.lower() in SUFFIXES]
    return items, classes


class ImageList(Dataset):
    def __init__(self, items: list[tuple[Path, int]], transform):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        return self.transform(Image.open(path).convert("RGB")), label


def shipped_lite0(num_classes: int) -> nn.Module:
    """timm efficientnet_lite0 with the weights tlzoo ships, the classifier replaced as the seed does."""
    from tlzoo.plugins.lite.backbones import LiteOptions, build_lite

    model = build_lite("efficientnet_lite0")(LiteOptions(), weights="pretrained").model
    for param in model.parameters():
        param.requires_grad = False
    model.classifier = nn.Linear(model.classifier.in_features, num_classes)  # new layer: trainable
    return model


def train_epoch(model, loader, criterion, optimizer) -> float:
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        count += len(y)
    return total / count


def test_accuracy(model, loader) -> float:
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            count += len(y)
    return correct / count


def fit(data: Path, epochs: int, mode: str, lr: float, batch_size: int = 64, log=print) -> dict:
    """`mode` 'head': the seed's recipe; 'full': the same, every parameter trained."""
    started = time.perf_counter()
    torch.manual_seed(0)
    train_items, classes = list_images(data / "train")
    test_items, _ = list_images(data / "test")
    model = shipped_lite0(len(classes))
    if mode == "full":
        for param in model.parameters():
            param.requires_grad = True
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    criterion = nn.CrossEntropyLoss()
    train_loader = DataLoader(ImageList(train_items, TRAIN_TRANSFORM), batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(ImageList(test_items, TEST_TRANSFORM), batch_size=batch_size, shuffle=True)
    history, best = [], 0.0
    ready = time.perf_counter()
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        loss = train_epoch(model, train_loader, criterion, optimizer)
        train_seconds = time.perf_counter() - epoch_start
        scheduler.step()
        accuracy = test_accuracy(model, test_loader)
        best = max(best, accuracy)
        history.append({"epoch": epoch + 1, "loss": loss, "top1": accuracy, "train_seconds": train_seconds,
                        "seconds": time.perf_counter() - epoch_start, "elapsed": time.perf_counter() - started})
        log(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} top-1 {accuracy:.4f} ({history[-1]['seconds']:.1f}s)")
    return {"mode": mode, "epochs": epochs, "train_images": len(train_items), "test_images": len(test_items),
            "best_top1": best, "history": history, "setup_seconds": ready - started,
            "wall_seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}


def plain_eval(model: nn.Module, items: list[tuple[Path, int]], transform, batch_size: int = 64) -> dict:
    """A plain fp32 NCHW evaluation pass (no workers, no_grad): logits of every item, in order, and its time."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    loader = DataLoader(ImageList(items, transform), batch_size=batch_size)
    started = time.perf_counter()
    logits = []
    with torch.no_grad():
        for x, _ in loader:
            logits.append(model(x))
    seconds = time.perf_counter() - started
    return {"logits": torch.cat(logits), "seconds": seconds, "images_per_second": len(items) / seconds}


def eval_run(run_dir: Path, data: Path, out: Path) -> None:
    """The plain eval loop over a tlzoo run's model (loaded through tlzoo; the timed loop is plain), best of 2."""
    from safetensors.torch import save_file

    from tlzoo.engine.inference import load_run
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.registry import get_registry

    run = load_run(run_dir, get_registry())
    items, _ = list_images(data / "test")
    passes = [plain_eval(run.model, items, build_eval_transform(run.data_config)) for _ in range(2)]
    best = min(passes, key=lambda p: p["seconds"])
    save_file({"logits": best["logits"].contiguous()}, out.with_suffix(".safetensors"))
    out.write_text(json.dumps({"seconds": best["seconds"], "images_per_second": best["images_per_second"],
                               "all_seconds": [p["seconds"] for p in passes]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["head", "full", "eval"])
    parser.add_argument("--run-dir", type=Path, help="eval: the tlzoo run whose model to evaluate")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 (head, the seed's), 1e-4 (full)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.mode == "eval":
        eval_run(args.run_dir, args.data, args.json)
        return
    lr = args.lr if args.lr is not None else (1e-3 if args.mode == "head" else 1e-4)
    result = fit(args.data, args.epochs, args.mode, lr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
