"""Short runs for tests/test_distributed.py, run once as one process and once under `torchrun --nproc_per_node 2`.

Every run starts from the same tiny models (dropout 0, so one process and two ranks compute the same function) and
the same toy data; test_distributed.py compares the folders the two launches write.
  python tests/ddp_check.py OUT                       -> OUT/<run> for the runs of RUNS
  torchrun --nproc_per_node 2 tests/ddp_check.py OUT  -> the same runs, plus the resume runs of RESUME
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import torch
import datasets, transformers

from hrkd.data import tokenize
from hrkd.distill import DistillConfig, distill
from hrkd.distributed import all_reduce_sum, init_distributed, shard_batch
from hrkd.fixtures import tiny_pretrained, toy_reviews
from hrkd.models import load_tokenizer, teacher_from_pretrained
from hrkd.prototypes import layer_prototypes
from hrkd.teachers import TeacherConfig, train_teacher

transformers.utils.logging.disable_progress_bar(); datasets.disable_progress_bars()
torch.set_num_threads(1)


def prototype_check(dist) -> dict:
    """Eq. (6) on shards: prototypes and their gradients on two ranks against the whole batch in this process.
    Each rank's loss is (prototypes * W).sum(); DDP averages the ranks' gradients, so the gradient of a rank's rows,
    divided by the world size, must equal the whole batch's gradient of those rows."""
    torch.manual_seed(0)
    B, T, F, D = 8, 5, 6, 2
    hidden = [torch.randn(B, T, F) for _ in range(3)]
    mask = (torch.arange(T)[None] < torch.tensor([5, 2, 3, 4, 1, 5, 3, 2])[:, None]).long()
    batch = {'input_ids': mask, 'attention_mask': mask, 'domain_ids': torch.arange(D).repeat_interleave(B // D),
             **{f'h{m}': h for m, h in enumerate(hidden)}}
    weight = torch.randn(3, D, F)
    whole = [h.clone().requires_grad_() for h in hidden]
    expected = layer_prototypes(whole, mask, batch["domain_ids"], D)
    (expected * weight).sum().backward()
    shard, _ = shard_batch(batch, D, dist)
    mine = [shard[f'h{m}'].clone().requires_grad_() for m in range(3)]
    synced = layer_prototypes(mine, shard['attention_mask'], shard["domain_ids"], D, reduce=all_reduce_sum)
    (synced * weight).sum().backward()
    local = layer_prototypes(mine, shard['attention_mask'], shard["domain_ids"], D)
    rows, _ = shard_batch({'input_ids': torch.arange(B), 'domain_ids': batch['domain_ids']}, D, dist)
    grad_error = max((m.grad / dist.world_size - w.grad[rows['input_ids']]).abs().max().item() for m, w in zip(mine, whole))
    return {'synced_error': (synced - expected).abs().max().item(), 'local_error': (local - expected).abs().max().item(),
            'grad_error': grad_error, 'grad_scale': max(w.grad.abs().max().item() for w in whole)}


def main(out: Path):
    dist = init_distributed('cpu')
    out.mkdir(parents=True, exist_ok=True)
    tiny = out / 'tiny'
    if dist.main and not (tiny / 'config.json').exists():  # dropout 0: one process and two ranks compute one function
        tiny_pretrained(tiny, layers=4, hidden=24, dropout=0.0)
    if dist.enabled: torch.distributed.barrier()
    tokenizer = load_tokenizer(tiny)
    data = tokenize(toy_reviews(sizes=(48, 8, 8)), tokenizer, max_length=24)  # 3 domains, 144 training rows
    quiet = dict(tokenizer=tokenizer, progress=False)
    teacher_common = dict(model=str(tiny), lr=1e-3, precision='fp32', eval_every=2, max_steps=2, seed=3)
    train_teacher(TeacherConfig(kind='mtl', batch_size=4, **teacher_common), data, out / 'teacher-mtl', **quiet)
    # mix: 144 rows in steps of 25, so the 6th step has 19 rows, shared 10 / 9 by two ranks (weighted means)
    train_teacher(TeacherConfig(kind='mix', batch_size=25, **{**teacher_common, 'max_steps': None, 'eval_every': 6},
                                epochs=1), data, out / 'teacher-mix', **quiet)
    torch.manual_seed(5)
    teacher = teacher_from_pretrained(tiny, ['books', 'dvd', 'kitchen'], 2)  # fresh heads, the same in every process
    student = dict(student=str(tiny), student_layers=[2, 4], lr=1e-3, batch_size=4, eval_every=2, max_steps=2,
                   precision='fp32', graph_dropout=0.0, seed=7)
    runs = {'hrkd': dict(method='hrkd'), 'tinybert': dict(method='tinybert'),
            'hrkd-batch': dict(method='hrkd', padding='batch')}
    if dist.enabled: runs['hrkd-local'] = dict(method='hrkd', distributed_prototypes='local')
    for name, extra in runs.items(): distill(DistillConfig(**student, **extra), teacher, data, out / name, **quiet)
    if dist.enabled:
        checks = prototype_check(dist)
        every = [None] * dist.world_size
        torch.distributed.all_gather_object(every, checks)
        if dist.main: (out / 'prototypes.json').write_text(json.dumps(every))
    if dist.enabled:  # resume: stopped after 3 of 6 steps (with a checkpoint at step 3) and resumed
        long = {**student, 'max_steps': 6, 'eval_every': 2, 'graph_dropout': 0.1}
        distill(DistillConfig(method='hrkd', **long), teacher, data, out / 'whole', **quiet)
        first = distill(DistillConfig(method='hrkd', **long), teacher, data, out / 'resumed', stop_after=3, **quiet)
        second = distill(DistillConfig(method='hrkd', **long), teacher, data, out / 'resumed', resume=True, **quiet)
        if dist.main:
            (out / 'resume.json').write_text(json.dumps({'first': first['status'], 'second': second['status'],
                                                         'world_size': dist.world_size}))
    if dist.enabled: torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main(Path(sys.argv[1]))
