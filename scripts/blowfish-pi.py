#!/usr/bin/env python3
"""Writes src/hash/bcrypt/pi.rs: Blowfish's initial P-array and S-boxes, which are the first
8336 hexadecimal digits of pi's fractional part. Computed here with Machin's formula in
integer arithmetic, so the table comes from the definition rather than from another program."""
import pathlib
import subprocess


def arctan_inv(x, one):
    total = term = one // x
    n, sign = 1, 1
    while term:
        term //= x * x
        n += 2
        sign = -sign
        total += sign * (term // n)
    return total


WORDS = 18 + 4 * 256
bits = 32 * (WORDS + 2)
one = 1 << (bits + 64)
pi = 4 * (4 * arctan_inv(5, one) - arctan_inv(239, one))
frac = (pi >> 64) - (3 << bits)
digits = format(frac, "0%dx" % (bits // 4))
words = [int(digits[i * 8 : i * 8 + 8], 16) for i in range(WORDS)]


def rows(ws, indent):
    out = []
    for i in range(0, len(ws), 6):
        out.append(indent + " ".join("0x%08x," % w for w in ws[i : i + 6]))
    return "\n".join(out)


text = """//! Blowfish's initial state: the fractional hexadecimal digits of pi, in order (P-array,
//! then S-boxes 0 to 3). Written by `scripts/blowfish-pi.py`; do not edit by hand.

/// The initial P-array: pi's first 18 fractional 32-bit words.
pub(super) const P: [u32; 18] = [
%s
];

/// The initial S-boxes: the 1024 words that follow.
pub(super) const S: [[u32; 256]; 4] = [
%s
];
""" % (
    rows(words[:18], "    "),
    "\n".join("    [\n%s\n    ]," % rows(words[18 + 256 * b : 18 + 256 * (b + 1)], "        ") for b in range(4)),
)
path = pathlib.Path(__file__).resolve().parent.parent / "src/hash/bcrypt/pi.rs"
path.write_text(text)
# In the project's style, so `cargo fmt` leaves it as written.
subprocess.run(["rustfmt", "--edition", "2024", str(path)], check=True)
