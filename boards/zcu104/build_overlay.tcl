# Build the stepvit overlay for the zcu104 (Vivado batch mode; Vivado is not needed elsewhere).
#
#   vivado -mode batch -source build_overlay.tcl [-tclargs VERILOG OUT_DIR]
#
# VERILOG defaults to stepvit_accel.v beside this script (`stepvit overlay` puts it there),
# OUT_DIR to the script's folder: stepvit.bit and stepvit.hwh land there, for
# `stepvit run --board zcu104 EXPORT --overlay OUT_DIR` on the board.
# The values below are those of boards/zcu104/board.yaml.
set script_dir [file dirname [file normalize [info script]]]
set part xczu7ev-ffvc1156-2-e
set board_part xilinx.com:zcu104:part0:1.1
set ps_kind zynqmp
set clock_mhz 100
set dma_width 128
# The shared flow: beside this script in an overlay folder, in boards/common in the tree.
set flow [file join $script_dir stepvit_overlay.tcl]
if {![file exists $flow]} { set flow [file join $script_dir .. common stepvit_overlay.tcl] }
source $flow
