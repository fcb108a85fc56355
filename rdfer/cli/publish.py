"""``rdfer publish``: a finished run to the Hugging Face Hub."""

from __future__ import annotations

def _add_publish(sub) -> None:
    p = sub.add_parser(
        "publish", help="upload a finished run to the Hugging Face Hub (weights, config, model card, figures)",
        description="Upload a finished run folder to the Hugging Face Hub as ORG/NAME, in one commit: config.json "
        "(model config and data settings), model.safetensors (the last-epoch model), README.md (the model card; "
        "the run's own README.md when it is not rdfer's card), config.yaml, results.json and the run's PNG figures. "
        "Anyone then loads it with rdfer.load_model('hf-hub:ORG/NAME') or --checkpoint hf-hub:ORG/NAME. "
        "The folder is staged first: --dry-run DIR writes it to DIR and stops, nothing is sent (`hf upload ORG/NAME "
        "DIR` or this command without --dry-run uploads it later). "
        "Token: a write token from https://huggingface.co/settings/tokens, in the HF_TOKEN environment variable or "
        "stored by `hf auth login` (`huggingface-cli login` before huggingface_hub 1.0).",
    )
    p.add_argument("run_dir", help="a run folder that rdfer train finished (model.safetensors and results.json)")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the Hub repository (created when missing)")
    p.add_argument("--revision", metavar="BRANCH", help="the branch to commit to (created when missing; default main)")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps its "
                   "visibility)")
    p.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR (new or empty) "
                   "and stop: nothing is sent; rdfer.load_model(DIR) loads it")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args) -> int:
    from ..engine.publish import publish

    publish(args.run_dir, args.repo, revision=args.revision, private=args.private, dry_run=args.dry_run)
    return 0
