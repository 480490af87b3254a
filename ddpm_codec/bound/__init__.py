"""The variational bound: L_T + sum L_{t-1} + L_0 (DDPM eq. 5, VDM eq. 17), training losses, and fitted coding-chain times."""
