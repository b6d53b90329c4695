"""A PyTorch language model whose attention is mnemo's selective kind (mnemo.torch.Attention):
byte tokens, two pre-norm blocks, trained with torch.optim.AdamW on a short text; selective's
memory loss (mem_eps) is added to the cross-entropy as the C model adds it.

    .venv/bin/python examples/torch_selective.py [steps]
"""
import sys

import torch
from torch import nn

import mnemo.torch as mt

TEXT = (b"Selective attention lets a token mask what earlier tokens no longer need; "
        b"the memory loss rewards forgetting. ") * 20


class Block(nn.Module):
    def __init__(self, C, NH, n_layer, layer):
        super().__init__()
        self.NH = NH
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.attn = mt.Attention("selective", NH, C // NH, layer=layer, n_layer=n_layer,
                                 mem_eps=0.1)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.NH, C // self.NH).unbind(2)
        a, aux = self.attn(q, k, v, return_aux=True)                 # (B,T,NH,HS), ()
        x = x + self.proj(a.reshape(B, T, C))
        return x + self.mlp(self.ln2(x)), aux


class LM(nn.Module):
    def __init__(self, C=64, NH=4, n_layer=2):
        super().__init__()
        self.wte = nn.Embedding(256, C)
        self.blocks = nn.ModuleList(Block(C, NH, n_layer, i) for i in range(n_layer))
        self.ln, self.head = nn.LayerNorm(C), nn.Linear(C, 256)

    def forward(self, idx, targets):
        x, aux = self.wte(idx), 0.0
        for b in self.blocks:
            x, a = b(x)
            aux = aux + a
        ce = nn.functional.cross_entropy(self.head(self.ln(x)).flatten(0, 1), targets.flatten())
        return ce, ce + aux / idx.shape[0]          # aux is summed over the B windows


def train(steps=200, B=8, T=64, seed=0):
    torch.manual_seed(seed)
    data = torch.tensor(list(TEXT))
    model = LM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        i = torch.randint(0, len(data) - T - 1, (B,))
        x = torch.stack([data[j:j + T] for j in i])
        y = torch.stack([data[j + 1:j + T + 1] for j in i])
        ce, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(ce))
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:4d} cross-entropy {float(ce):.3f} objective {float(loss):.3f}")
    return losses


if __name__ == "__main__":
    train(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
