"""The model under load: :class:`BatchGenerator`.

The adapter is loaded once and owned by one thread; prompts wait in a queue and whatever is
waiting when the model comes free is generated as one batch (up to ``max_batch`` prompts).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


class BatchGenerator:
    """The adapter, loaded once and driven by one thread; prompts wait in a queue and
    those waiting together are generated as one batch."""

    def __init__(self, adapter: Path, params: Path, max_batch: int):
        from text2sql.inference.hf import load_for_inference
        from text2sql.params import InferParams, load_params

        self.adapter = adapter
        self.infer = load_params("infer", params) if params.is_file() else InferParams()
        self.model, self.tokenizer = load_for_inference(adapter)
        self.max_batch = max_batch
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches: list[int] = []  # sizes of the last 1000 batches generated

    async def write(self, prompt: list[dict[str, str]], num_samples: int) -> Any:
        """The generation for one prompt (waits its turn in the queue)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((prompt, num_samples, future))
        return await future

    async def write_many(self, prompts: list[list[dict[str, str]]], num_samples: int
                         ) -> list[Any]:
        """The generations for several prompts, queued together (so batched together)."""
        return list(await asyncio.gather(*(self.write(p, num_samples) for p in prompts)))

    async def run(self) -> None:
        """Forever: take what is waiting, generate it in batches of equal ``num_samples``."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self.queue.get()]
            while len(waiting) < self.max_batch and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
            for n in sorted({item[1] for item in waiting}):
                batch = [item for item in waiting if item[1] == n and not item[2].done()]
                if not batch:
                    continue
                try:
                    outs = await loop.run_in_executor(self.thread, self._generate,
                                                      [item[0] for item in batch], n)
                except Exception as e:  # noqa: BLE001 - handed to each waiting request
                    for item in batch:
                        if not item[2].done():
                            item[2].set_exception(e)
                    continue
                self.batches = (self.batches + [len(batch)])[-1000:]
                for item, out in zip(batch, outs, strict=True):
                    if not item[2].done():
                        item[2].set_result(out)

    def _generate(self, prompts: list[list[dict[str, str]]], n: int) -> list[Any]:
        from text2sql.inference.hf import generate

        return generate(self.model, self.tokenizer, prompts, batch_size=len(prompts) * n,
                        max_new_tokens=self.infer.max_new_tokens, num_samples=n,
                        temperature=self.infer.temperature, seed=self.infer.seed,
                        progress=False)
