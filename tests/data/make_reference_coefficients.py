"""Generate tests/data/reference_coefficients.json: normalised Hermite coefficients
c_k = E[f(z) He_k(z)]/sqrt(k!) for k = 0..30, by mpmath adaptive quadrature at 40 digits,
split at 0 (the kink/jump of relu, abs, sign) and integrated on (-inf, 0] and [0, inf).

This is an independent route: it shares no code with popdyn (mpmath's own Hermite
polynomials, tanh-sinh quadrature, 40-digit arithmetic).

Run:  python tests/data/make_reference_coefficients.py
"""

import json
from pathlib import Path

import mpmath as mp

mp.mp.dps = 40
DEGREE = 30

FUNCS = {
    "relu": lambda z: mp.mpf(0) if z < 0 else z,
    "abs": lambda z: abs(z),
    "sign": lambda z: mp.sign(z),
    "tanh": mp.tanh,
    "logcosh": lambda z: mp.log(mp.cosh(z)),
    "erf": lambda z: mp.erf(z / mp.sqrt(2)),
    "sigmoid": lambda z: 1 / (1 + mp.exp(-z)),
    "softplus": lambda z: mp.log1p(mp.exp(z)),
    "gelu": lambda z: z * mp.ncdf(z),
    "silu": lambda z: z / (1 + mp.exp(-z)),
}


def coeff(f, k):
    w = lambda z: f(z) * mp.hermite(k, z / mp.sqrt(2)) * 2 ** (-mp.mpf(k) / 2) * mp.npdf(z)  # He_k(z) = 2^{-k/2} H_k(z/sqrt2)
    val = mp.quad(w, [-mp.inf, -20, -8, 0]) + mp.quad(w, [0, 8, 20, mp.inf])
    return val / mp.sqrt(mp.factorial(k))


def second_moment(f):
    w = lambda z: f(z) ** 2 * mp.npdf(z)
    return mp.quad(w, [-mp.inf, -8, 0]) + mp.quad(w, [0, 8, mp.inf])


def main():
    out = {"_source": __doc__.strip(), "degree": DEGREE, "coefficients": {}, "second_moment": {}}
    for name, f in FUNCS.items():
        out["coefficients"][name] = [mp.nstr(coeff(f, k), 25) for k in range(DEGREE + 1)]
        out["second_moment"][name] = mp.nstr(second_moment(f), 25)
        print(name, out["coefficients"][name][:3], flush=True)
    Path(__file__).with_name("reference_coefficients.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
