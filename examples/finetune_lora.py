"""LoRA fine-tuning of a transformers Mamba-2 model on the CPU with mamba2c's training kernels.

The recipe of transformers' Mamba-2 documentation (PEFT LoRA + TRL's SFTTrainer with gradient
checkpointing), with every mixer's conv, SSD and gated norm, the RMSNorms and the loss computed
by mamba2c (``mamba2c.torch.use_mamba2c_kernels``). Everything is made here, nothing is
downloaded: a small random Mamba-2 model, a byte-level BPE tokenizer trained on the text, and a
text data set generated from a few templates. Prints the loss and the time of every step; the
loss falls as the model learns the templates.

    python examples/finetune_lora.py [--steps 40] [--threads 2] [--no-mamba2c]

Needs torch, transformers, peft, trl, datasets and tokenizers. A pretrained checkpoint works the
same way: load it with transformers.Mamba2ForCausalLM.from_pretrained and its tokenizer instead.
"""
import argparse
import os
import random
import time

# This tiny model's steps are thousands of short parallel regions (torch's and mamba2c's, one
# OpenMP runtime): threads that spin between them starve everything else when the cores are
# shared, so they sleep instead unless the environment says otherwise. Read once, when the
# OpenMP runtime loads, hence before importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

import mamba2c  # noqa: E402
from mamba2c.torch import use_mamba2c_kernels  # noqa: E402

SUBJECTS = ["the state space model", "a selective scan", "the chunked kernel", "mamba2c",
            "the recurrent state", "a causal convolution", "the gated norm", "the C engine"]
VERBS = ["computes", "carries", "compresses", "updates", "reads", "multiplies", "streams"]
OBJECTS = ["every token of the prompt", "the hidden state in float32", "one chunk at a time",
           "the decay of each head", "a small matrix per group", "the gradient of the loss"]
TEMPLATES = ["{s} {v} {o}.", "In training, {s} {v} {o}.", "Why? Because {s} {v} {o}!",
             "{s} {v} {o}, and then {s2} {v2} {o2}."]


def make_texts(n, seed=0):
    rng = random.Random(seed)
    pick = lambda: (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS))
    texts = []
    for _ in range(n):
        (s, v, o), (s2, v2, o2) = pick(), pick()
        text = rng.choice(TEMPLATES).format(s=s, v=v, o=o, s2=s2, v2=v2, o2=o2)
        texts.append(text[0].upper() + text[1:])
    return texts


def make_tokenizer(texts, vocab_size=512):
    """A byte-level BPE tokenizer trained on the texts, as transformers' fast tokenizer."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                                eos_token="<eos>")


class StepTimer(transformers.TrainerCallback):
    """Prints the loss and the wall time of each optimizer step."""

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            print(f"step {state.global_step:3d}  loss {logs['loss']:.4f}  "
                  f"{self.seconds:.3f} s/step", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-mamba2c", action="store_true", help="transformers' own kernels")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    mamba2c.set_num_threads(args.threads)

    texts = make_texts(2000)
    tokenizer = make_tokenizer(texts)
    config = transformers.Mamba2Config(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=4, num_heads=8,
        head_dim=32, state_size=32, n_groups=1, expand=2, chunk_size=32,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id)
    model = transformers.Mamba2ForCausalLM(config)
    if not args.no_mamba2c:
        use_mamba2c_kernels(model)  # before or after PEFT: the mixers call in_proj as a module

    # The documented list. "x_proj" is a Mamba-1 module that Mamba-2 does not have: PEFT
    # skips a listed name that matches nothing as long as another one matches. "out_proj" is
    # left out because PEFT (>= 0.14) refuses LoRA on a Mamba model's out_proj: the fused CUDA
    # kernel of mamba_ssm reads out_proj.weight directly and would bypass the adapter. (The
    # mamba2c path calls out_proj as a module, so an adapter there would work, but PEFT's check
    # does not know that.)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["x_proj", "embeddings", "in_proj"])
    sft = SFTConfig(
        output_dir="/tmp/mamba2c-finetune-lora", max_steps=args.steps,
        per_device_train_batch_size=args.batch, learning_rate=3e-3, lr_scheduler_type="constant",
        warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none",
        gradient_checkpointing=True, max_length=64, packing=False, use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = SFTTrainer(model=model, args=sft, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=tokenizer, peft_config=lora,
                         callbacks=[StepTimer()])
    trainer.remove_callback(transformers.PrinterCallback)  # StepTimer prints instead
    trainer.model.print_trainable_parameters()
    start = time.perf_counter()
    result = trainer.train()
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s, "
          f"final training loss {result.training_loss:.4f} (mean over the run)")

    prompt = tokenizer("The chunked kernel", return_tensors="pt")
    model = trainer.model.eval()
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    print("sample:", tokenizer.decode(out[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
