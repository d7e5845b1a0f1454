"""A molecule's internal coordinates (a Z-matrix) from its bond graph, and the maps to and from Cartesian.

Atoms are placed one at a time in a breadth-first order from a central atom (heavy atoms before
hydrogens among each atom's neighbours). Atom a (placed k-th) is given by three placed atoms:
b bonded to a, c bonded to b, and a torsion reference d, through
    r_a = |a - b|,   theta_a = angle(a, b, c) in (0, pi),   tau_a = dihedral(a, b, c, d) in (-pi, pi],
the dihedral in the IUPAC/mdtraj sign convention. d is a *sibling* (an atom bonded to b, placed
before a) where b has one: such a torsion is narrow (it fixes a's position around b relative to
the sibling, e.g. a methyl's second hydrogen, or the CB that makes a CA L or D). Otherwise d is
bonded to c (a proper torsion about the bond b-c: a peptide's phi, psi, omega, a methyl rotor).
The first atom has no coordinate, the second a bond, the third a bond and an angle: 3 n - 6 in all,
laid out as [r (n - 1), theta (n - 2), tau (n - 3)] in placement order.

The Cartesian volume element in these coordinates (the six external ones, the position of the first
atom and the orientation, integrated out) is
    dx = prod_k r_k^2 * prod_k sin(theta_k) dq  (x) d^3 t d^3 Omega,
so a density exp(-E(x)) on R^(3n) has the marginal exp(-E(x(q))) * |J(q)| on the internal
coordinates, with log |J(q)| = sum_k 2 log r_k + sum_k log sin theta_k (Noe et al. 2019, Boltzmann
generators, supplement; Parsons et al. 2005 for the placement formula, "NeRF").
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from functools import cached_property

import torch

Tensor = torch.Tensor


def dihedral(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> Tensor:
    """Dihedral angle (..., ) in (-pi, pi] of the points (..., 3), IUPAC/mdtraj convention:
    atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3)) with b1 = p1 - p0, b2 = p2 - p1, b3 = p3 - p2."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.cross(b1, b2, dim=-1), torch.cross(b2, b3, dim=-1)
    y = b2.norm(dim=-1) * (b1 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def bond_angle(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """The angle at b between a - b and c - b, (...,), in [0, pi]."""
    u, v = a - b, c - b
    return torch.atan2(torch.cross(u, v, dim=-1).norm(dim=-1), (u * v).sum(-1))


def place(b: Tensor, c: Tensor, d: Tensor, r: Tensor, theta: Tensor, tau: Tensor) -> Tensor:
    """The atom a (B, 3) with |a - b| = r, angle(a, b, c) = theta and dihedral(a, b, c, d) = tau
    (NeRF, Parsons et al. 2005)."""
    bc = b - c
    bc = bc / bc.norm(dim=-1, keepdim=True)
    n = torch.cross(c - d, bc, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True)
    m = torch.cross(n, bc, dim=-1)
    local = (-r * torch.cos(theta), r * torch.sin(theta) * torch.cos(tau), r * torch.sin(theta) * torch.sin(tau))
    return b + local[0][:, None] * bc + local[1][:, None] * m + local[2][:, None] * n


@dataclass(frozen=True)
class ZMatrix:
    """Placement order and references: `order[k]` is the k-th placed atom; `refs[k]` = (b, c, d) atom
    indices (-1 where the atom has no such reference: k < 3 for d, k < 2 for c, k = 0 for b);
    `sibling[k]`: whether d is bonded to b (a narrow torsion) rather than to c; `in_ring[k]`: whether
    the bond b-c lies on a ring (a cycle of the bond graph), so that a torsion about it is held
    narrow by the ring's closure (empty: no ring information, every torsion treated as ring-free)."""

    n_atoms: int
    order: tuple[int, ...]
    refs: tuple[tuple[int, int, int], ...]
    sibling: tuple[bool, ...]
    in_ring: tuple[bool, ...] = ()

    @property
    def dim(self) -> int:
        return 3 * self.n_atoms - 6

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_bonds(cls, n_atoms: int, bonds, heavy) -> ZMatrix:
        """From the bond list [(i, j), ...] of a connected molecule and a flag per atom (heavy or H)."""
        if n_atoms < 4:
            raise ValueError(f"internal coordinates need at least 4 atoms, got {n_atoms}")
        nbr: list[list[int]] = [[] for _ in range(n_atoms)]
        for i, j in bonds:
            nbr[int(i)].append(int(j))
            nbr[int(j)].append(int(i))
        for lst in nbr:   # heavy atoms first, then by index: the first child of each atom is a heavy one
            lst.sort(key=lambda j: (not heavy[j], j))
        root = _centre(nbr, heavy)
        parent, order = _bfs(nbr, root)
        if len(order) != n_atoms:
            raise ValueError(f"internal coordinates need a connected molecule; {n_atoms - len(order)} of "
                             f"{n_atoms} atoms are not bonded to the rest")
        if len(nbr[root]) < 2 and len(nbr[order[1]]) < 2:
            raise ValueError("internal coordinates: the molecule has no three bonded atoms in a row")
        zm = cls._with_refs(n_atoms, order, parent, nbr)
        ring = ring_bonds(nbr)
        return replace(zm, in_ring=tuple(k >= 2 and frozenset(zm.refs[k][:2]) in ring for k in range(n_atoms)))

    @classmethod
    def _with_refs(cls, n_atoms: int, order: list[int], parent: dict, nbr: list[list[int]]) -> ZMatrix:
        rank = {a: k for k, a in enumerate(order)}
        refs, sibling = [], []
        for k, a in enumerate(order):
            if k == 0:
                refs.append((-1, -1, -1))
                sibling.append(False)
                continue
            b = parent[a]
            placed = [j for j in nbr[b] if rank[j] < k and j != a]
            c = parent[b] if b in parent else (placed[0] if placed else -1)
            if k == 1:
                refs.append((b, -1, -1))
                sibling.append(False)
                continue
            if c == -1 or c not in nbr[b]:
                raise AssertionError("unreachable: c is bonded to b")
            if k == 2:
                refs.append((b, c, -1))
                sibling.append(False)
                continue
            sibs = [j for j in nbr[b] if rank[j] < k and j not in (a, c)]
            if sibs:
                refs.append((b, c, sibs[0]))
                sibling.append(True)
                continue
            proper = ([parent[c]] if c in parent else []) + [j for j in nbr[c] if rank[j] < k and j != b]
            refs.append((b, c, proper[0]))
            sibling.append(False)
        return cls(n_atoms, tuple(order), tuple(refs), tuple(sibling))

    # -- index tensors (built once) ---------------------------------------------------------------
    @cached_property
    def _index(self) -> dict[str, Tensor]:
        """The atoms that carry r (from k = 1), theta (k = 2) and tau (k = 3), and their b, c, d."""
        def col(c: int, start: int) -> Tensor:
            return torch.tensor([self.refs[k][c] for k in range(start, self.n_atoms)], dtype=torch.long)
        return {"a1": torch.tensor(self.order[1:]), "b1": col(0, 1), "a2": torch.tensor(self.order[2:]),
                "b2": col(0, 2), "c2": col(1, 2), "a3": torch.tensor(self.order[3:]), "b3": col(0, 3),
                "c3": col(1, 3), "d3": col(2, 3)}

    @property
    def proper_torsions(self) -> list[int]:
        """Indices (into the torsion block) of the proper torsions (rotations about a bond)."""
        return [k - 3 for k in range(3, self.n_atoms) if not self.sibling[k]]

    @property
    def free_torsions(self) -> list[int]:
        """The proper torsions about a bond on no ring: those that rotate freely (phi, psi, a methyl
        rotor); a ring's own torsions only pucker within a few tens of degrees."""
        ring = self.in_ring or (False,) * self.n_atoms
        return [k - 3 for k in range(3, self.n_atoms) if not self.sibling[k] and not ring[k]]

    # -- maps -----------------------------------------------------------------------------------
    def to_internal(self, pos: Tensor) -> Tensor:
        """q (B, 3n - 6) = [r, theta, tau] of positions pos (B, n, 3)."""
        i = {k: v.to(pos.device) for k, v in self._index.items()}
        r = (pos[:, i["a1"]] - pos[:, i["b1"]]).norm(dim=-1)
        theta = bond_angle(pos[:, i["a2"]], pos[:, i["b2"]], pos[:, i["c2"]])
        tau = dihedral(pos[:, i["a3"]], pos[:, i["b3"]], pos[:, i["c3"]], pos[:, i["d3"]])
        return torch.cat([r, theta, tau], dim=1)

    def split(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = self.n_atoms
        return q[:, : n - 1], q[:, n - 1: 2 * n - 3], q[:, 2 * n - 3:]

    def to_cartesian(self, q: Tensor) -> Tensor:
        """Positions (B, n, 3) of internal coordinates q (B, 3n - 6): the first atom at the origin, the
        second on the +x axis, the third in the xy plane (y > 0 for theta in (0, pi))."""
        r, theta, tau = self.split(q)
        B, n = q.shape[0], self.n_atoms
        pos: list[Tensor | None] = [None] * n
        zero = q.new_zeros(B)
        pos[self.order[0]] = q.new_zeros(B, 3)
        pos[self.order[1]] = torch.stack([r[:, 0], zero, zero], dim=1)
        b, c, _ = self.refs[2]
        u = pos[c] - pos[b]
        u = u / u.norm(dim=-1, keepdim=True)
        ey = q.new_tensor([0.0, 1.0, 0.0]).expand(B, 3)
        pos[self.order[2]] = pos[b] + r[:, 1:2] * (torch.cos(theta[:, :1]) * u + torch.sin(theta[:, :1]) * ey)
        for k in range(3, n):
            b, c, d = self.refs[k]
            pos[self.order[k]] = place(pos[b], pos[c], pos[d], r[:, k - 1], theta[:, k - 2], tau[:, k - 3])
        return torch.stack(pos, dim=1)

    def log_jacobian(self, q: Tensor) -> Tensor:
        """log |J(q)| = sum 2 log |r| + sum log |sin theta|, (B,): the Cartesian volume per unit
        internal volume, with the external coordinates integrated out (module docstring)."""
        r, theta, _ = self.split(q)
        return 2.0 * torch.log(r.abs()).sum(1) + torch.log(torch.sin(theta).abs()).sum(1)


def ring_bonds(nbr: list[list[int]]) -> set[frozenset[int]]:
    """The bonds {i, j} of an adjacency list that lie on a cycle: those whose removal leaves j
    reachable from i (no bridge)."""
    out: set[frozenset[int]] = set()
    for i, lst in enumerate(nbr):
        for j in lst:
            if j < i:
                continue
            seen, todo = {i}, deque([i])
            while todo:
                a = todo.popleft()
                for b in nbr[a]:
                    if b not in seen and not (a == i and b == j):
                        seen.add(b)
                        todo.append(b)
            if j in seen:
                out.add(frozenset((i, j)))
    return out


def _centre(nbr: list[list[int]], heavy) -> int:
    """A heavy atom of least eccentricity in the bond graph (ties: the lowest index) with two or more
    neighbours: breadth-first placement from the middle keeps the chains of references short."""
    best, best_ecc = None, None
    for a in range(len(nbr)):
        if not heavy[a] or len(nbr[a]) < 2:
            continue
        ecc = max(_distances(nbr, a).values())
        if best_ecc is None or ecc < best_ecc:
            best, best_ecc = a, ecc
    if best is None:
        raise ValueError("internal coordinates need a heavy atom with two or more bonds")
    return best


def _distances(nbr: list[list[int]], src: int) -> dict[int, int]:
    dist, todo = {src: 0}, deque([src])
    while todo:
        a = todo.popleft()
        for j in nbr[a]:
            if j not in dist:
                dist[j] = dist[a] + 1
                todo.append(j)
    return dist


def _bfs(nbr: list[list[int]], root: int) -> tuple[dict[int, int], list[int]]:
    parent, order, todo = {}, [root], deque([root])
    seen = {root}
    while todo:
        a = todo.popleft()
        for j in nbr[a]:
            if j not in seen:
                seen.add(j)
                parent[j] = a
                order.append(j)
                todo.append(j)
    return parent, order


__all__ = ["ZMatrix", "bond_angle", "dihedral", "place"]
