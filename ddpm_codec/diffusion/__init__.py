"""The model: noise schedules (DDPM, VDM), the forward/posterior maths (DDPM eq. 4-7), the discretized decoder (eq. 13), the U-Net and named configs."""
