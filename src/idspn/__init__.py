"""idspn: multiset-equivariant set prediction with approximate implicit differentiation."""
