"""Wrap a stock torchvision classifier with RDFER and train it a few steps on random data.

    python examples/own_model.py
"""

import torch
import torchvision

import rdfer

# 1. Any classifier: as_backbone strips its head and finds out what it returns.
#    resnet18 is a 2D image model, so it becomes a frame-level backbone.
backbone = rdfer.as_backbone(torchvision.models.resnet18(num_classes=1000))
print(f"backbone: token_level={backbone.token_level}, feature_dim={backbone.feature_dim}")

# 2. Wrap it: re-sampler + dual-stream hierarchical network + heads. Small sizes for a CPU demo.
model = rdfer.wrap_with_rdfer(backbone, num_classes=7, d_model=128, summary_dim=32)

# 3. The agreement loss keeps a memory per training sample, keyed by dataset index.
num_videos = 16
criterion = rdfer.AgreementLoss(num_samples=num_videos, scope="batch")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

videos = torch.randn(num_videos, 3, 32, 64, 64)  # (N, C, T, H, W): 32 frames of 64 px
labels = torch.randint(0, 7, (num_videos,))
for step in range(3):
    index = torch.randperm(num_videos)[:4]
    out = model(videos[index])  # out.logits (4, 7), out.clip_logits (4, 4, 7)
    loss = criterion(out, labels[index], index)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    print(f"step {step}: loss {loss.item():.3f}, flags {criterion.last_flags.tolist()} (0 ordinary, 1 hard, 2 noisy)")

pred = model.predict(videos[:2])
print("probabilities", pred.probs.shape, "agreement", pred.agreement.tolist(), "window centre", pred.mu.tolist())
