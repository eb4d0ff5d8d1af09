"""A dataset version's card, card.md beside its dataset.json: what the user says of the images
(data.card: description, licence, citation) and what ingest knows of them (counts per split and
class, imbalance, duplicates, quarantine reasons, leakage, near-duplicate groups, image sizes),
as Markdown."""

CARD_MD = "card.md"


def render(dataset: dict) -> str:
    """The card of `dataset` (a dataset.json)."""
    card = dataset.get("card") or {}
    splits = dataset["splits"]
    lines = [
        f"# Dataset {dataset['version']}",
        "",
        card.get("description") or "_No description: set data.card.description._",
        "",
        f"- **Source:** {dataset['source']}",
        f"- **Licence:** {card.get('license') or 'not stated (data.card.license)'}",
        f"- **Citation:** {card.get('citation') or 'not stated (data.card.citation)'}",
        f"- **Images:** {dataset['written']:,} written of {dataset['files_seen']:,} found; "
        f"{dataset['duplicates']:,} byte-identical copies dropped, "
        f"{dataset['quarantined']:,} quarantined",
        f"- **Classes:** {dataset['num_classes']}, imbalance ratio {dataset['imbalance_ratio']} "
        "(largest / smallest class)",
        f"- **Leakage:** {len(dataset['leakage'])} image(s) given in more than one split",
        f"- **Near-duplicates:** {near_duplicates_line(dataset.get('near_duplicates'))}",
        "",
        "## Images per split and class",
        "",
        "| class | " + " | ".join(splits) + " | total |",
        "|---|" + "---:|" * (len(splits) + 1),
    ]
    for name in dataset["label_map"]:
        counts = [splits[split]["per_class"].get(name, 0) for split in splits]
        lines.append(f"| {name} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    totals = [splits[split]["count"] for split in splits]
    lines.append("| **all** | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |")
    reasons = dataset.get("quarantine_reasons") or {}
    if reasons:
        lines += ["", "## Quarantined", "", "| reason | images |", "|---|---:|"]
        lines += [f"| {reason} | {count} |" for reason, count in reasons.items()]
    groups = (dataset.get("near_duplicates") or {}).get("examples") or []
    if groups:
        lines += ["", "## Near-duplicate groups", "", "| images (split) |", "|---|"]
        for group in groups:
            lines.append(f"| {group_members(group)} |")
    stats = dataset["stats"]
    lines += ["", "## Image sizes (as found)", ""]
    for key, title in (("height_histogram", "height"), ("width_histogram", "width")):
        bins = ", ".join(f"{edge} px: {count}" for edge, count in stats[key].items())
        lines.append(f"- **{title}:** {bins}")
    formats = ", ".join(f"{name} {count}" for name, count in stats["original_formats"].items())
    lines.append(f"- **formats:** {formats}")
    return "\n".join(lines) + "\n"


def near_duplicates_line(found: dict | None) -> str:
    """One line on the near-duplicate search of a dataset.json (None: ingested before it)."""
    if not found or found["mode"] == "off":
        return "not checked (only byte-identical copies are found; data.near_duplicates.mode)"
    return (
        f"{found['groups']:,} group(s) of {found['images']:,} images whose perceptual hashes "
        f"differ in at most {found['max_distance']} bits; {found['straddling']:,} group(s) "
        f"span more than one split (data.near_duplicates.mode: {found['mode']})"
    )


def group_members(group: dict) -> str:
    """A reported near-duplicate group's members with their splits, and how many are not listed."""
    members = ", ".join(f"{m['source']} ({m['split'] or 'quarantined'})" for m in group["members"])
    more = group.get("size", len(group["members"])) - len(group["members"])
    return f"{members} and {more:,} more" if more > 0 else members


def quarantine_reasons(quarantine: list[dict]) -> dict[str, int]:
    """{reason kind: count}: a reason up to its first colon ("corrupt or truncated image")."""
    counts: dict[str, int] = {}
    for entry in quarantine:
        kind = entry["reason"].split(":", 1)[0].strip()
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
