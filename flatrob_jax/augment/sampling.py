"""Random draws carved out of ONE ``jax.random.uniform`` call, and Gamma/Beta/Dirichlet from it.

Each ``jax.random`` call inlines a Threefry hash into the program and ``jax.random.gamma`` a
rejection ``while_loop``; a policy sampler that makes many of them costs seconds of compile
time (it is compiled into every train step). Policies here draw one vector of uniforms per
image and transform slices of it:
  integers    ``floor(u * n)`` (clipped to n - 1);
  normals     Box-Muller;
  Gamma(a)    Marsaglia & Tsang (2000) with ``PROPOSALS`` candidates at once, keeping the first
              accepted: for shape >= 1 each is accepted with probability > 0.95, so all are
              rejected with probability < 0.05**8 ~ 4e-11 (then the last candidate is used);
              shapes < 1 use the boost ``Gamma(a) = Gamma(a + 1) * U**(1/a)``.
"""

import math

import jax
import jax.numpy as jnp

PROPOSALS = 8
GAMMA_UNIFORMS = 3 * PROPOSALS + 1  # uniforms one Gamma draw consumes


class Uniforms:
    """Hands out consecutive slices of one uniform vector drawn from ``key``."""

    def __init__(self, key, count: int):
        self._u = jax.random.uniform(key, (count,), minval=1e-7, maxval=1.0 - 1e-7)
        self._next = 0

    def take(self, shape) -> jnp.ndarray:
        n = math.prod(shape)
        if self._next + n > self._u.shape[0]:
            raise ValueError(f"asked for {self._next + n} uniforms, only {self._u.shape[0]} drawn")
        out = self._u[self._next : self._next + n].reshape(shape)
        self._next += n
        return out

    def integers(self, shape, low, high) -> jnp.ndarray:
        """Uniform integers in [low, high)."""
        return jnp.minimum(
            low + jnp.floor(self.take(shape) * (high - low)).astype(jnp.int32), high - 1
        )

    def bernoulli(self, shape, p=0.5) -> jnp.ndarray:
        return self.take(shape) < p

    def gamma(self, alpha, shape=()) -> jnp.ndarray:
        """Gamma(alpha, 1) of ``shape``; uses ``GAMMA_UNIFORMS * prod(shape)`` uniforms."""
        shape = tuple(shape)
        alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), shape)
        u1, u2, u3 = (self.take((PROPOSALS,) + shape) for _ in range(3))
        boost_u = self.take(shape)
        a = jnp.where(alpha < 1.0, alpha + 1.0, alpha)
        d = a - 1.0 / 3.0
        c = 1.0 / jnp.sqrt(9.0 * d)
        x = jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos(2.0 * jnp.pi * u2)
        v = (1.0 + c * x) ** 3
        accept = (v > 0) & (
            jnp.log(u3) < 0.5 * x * x + d - d * v + d * jnp.log(jnp.maximum(v, 1e-30))
        )
        first = jnp.argmax(jnp.concatenate([accept[:-1], jnp.ones_like(accept[-1:])]), axis=0)
        sample = d * jnp.take_along_axis(v, first[None], axis=0)[0]
        boost = boost_u ** (1.0 / jnp.maximum(alpha, 1e-12))
        return jnp.where(alpha < 1.0, sample * boost, sample)

    def beta(self, a, b) -> jnp.ndarray:
        """Beta(a, b) = X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b); uses 2 Gamma draws."""
        g = self.gamma(jnp.stack([jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)]), (2,))
        return g[0] / (g[0] + g[1])

    def dirichlet(self, alpha) -> jnp.ndarray:
        """Dirichlet(alpha) for a 1-D concentration vector; uses len(alpha) Gamma draws."""
        alpha = jnp.asarray(alpha, jnp.float32)
        g = self.gamma(alpha, alpha.shape)
        return g / jnp.sum(g)


def beta(key, a, b):
    """One Beta(a, b) draw from ``key``."""
    return Uniforms(key, 2 * GAMMA_UNIFORMS).beta(a, b)


__all__ = ["GAMMA_UNIFORMS", "PROPOSALS", "Uniforms", "beta"]
