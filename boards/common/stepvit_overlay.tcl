# The stepvit overlay flow, shared by every board: a block design with the Zynq PS, an
# AXI DMA (MM2S -> s_axis, S2MM <- m_axis, simple mode) and stepvit_accel as an RTL module
# reference on an AXI-Lite general-purpose port; then synthesis, implementation, bitstream,
# and stepvit.bit + stepvit.hwh side by side (PYNQ's Overlay needs both, named alike).
# A weights-from-DDR accelerator (stepvit rtl --weights ddr: m_axi_* read ports) also gets
# its m_axi master on a second HP port, ddr_port, ddr_width bits wide.
#
# build_overlay.tcl sets script_dir, sources board.tcl (written from the board's board.yaml:
# part board_part ps_ip gp_port hp_port clock_mhz dma_width, and ddr_port ddr_width where
# board.yaml has a ddr section), then this file.
# Arguments: [VERILOG [OUT_DIR]], by default stepvit_accel.v in script_dir and script_dir.
# Cell names are the host driver's (host/backend_pynq.py): axi_dma_0, stepvit_accel_0.

set verilog [file join $script_dir stepvit_accel.v]
set out_dir $script_dir
if {$argc > 0} { set verilog [file normalize [lindex $argv 0]] }
if {$argc > 1} { set out_dir [file normalize [lindex $argv 1]] }

# The ports stepvit_accel must have: model/export/SPEC.md section 5, rtl/top.py.
set accel_ports {
    aclk aresetn
    s_axis_tdata s_axis_tvalid s_axis_tready s_axis_tlast
    m_axis_tdata m_axis_tvalid m_axis_tready m_axis_tlast
    s_axil_awaddr s_axil_awvalid s_axil_awready s_axil_wdata s_axil_wstrb s_axil_wvalid
    s_axil_wready s_axil_bresp s_axil_bvalid s_axil_bready s_axil_araddr s_axil_arvalid
    s_axil_arready s_axil_rdata s_axil_rresp s_axil_rvalid s_axil_rready
}
# The read master a weights-from-DDR accelerator adds (rtl/top.py, rtl/PROTOCOL.md): all of
# them when m_axi_araddr is there, none otherwise.
set accel_ddr_ports {
    m_axi_arvalid m_axi_arready m_axi_araddr m_axi_arlen m_axi_arsize m_axi_arburst
    m_axi_rdata m_axi_rvalid m_axi_rready m_axi_rresp m_axi_rlast
}
# The write channels an accelerator whose residual stream is in DDR adds to the same m_axi
# master (stepvit rtl --stream-ddr): all of them when m_axi_awaddr is there, none otherwise.
set accel_ddr_write_ports {
    m_axi_awvalid m_axi_awready m_axi_awaddr m_axi_awlen m_axi_awsize m_axi_awburst
    m_axi_wvalid m_axi_wready m_axi_wdata m_axi_wstrb m_axi_wlast
    m_axi_bvalid m_axi_bready m_axi_bresp
}

proc stepvit_fail {message} {
    puts "ERROR: stepvit overlay: $message"
    exit 1
}

# The newest version of an IP in this Vivado's catalogue.
proc latest_ip {name} {
    set found [lsort [get_ipdefs -all -filter "NAME == $name"]]
    if {[llength $found] == 0} { stepvit_fail "IP $name is not in this Vivado's catalogue" }
    return [lindex $found end]
}

# The block-design path of a cell or pin, with one leading slash: Vivado prints a cell object
# as /name, and the automation's Master and Slave options take that path as it is.
proc bd_path {object} {
    return "/[string trimleft $object /]"
}

# Connect a pin to a net source unless something already drives it.
proc connect_if_open {source pin} {
    if {[llength [get_bd_nets -quiet -of_objects [get_bd_pins $pin]]] == 0} {
        connect_bd_net [get_bd_pins $source] [get_bd_pins $pin]
    }
}

if {![file exists $verilog]} {
    stepvit_fail "$verilog not found: generate it with `stepvit overlay EXPORT --board NAME --out DIR`"
}
set handle [open $verilog r]
set verilog_text [read $handle]
close $handle
# The top module's text alone, cut at its own endmodule: a regexp `\(.*?endmodule` would run
# to the file's last endmodule (in Tcl the first quantifier makes the whole RE greedy), and
# a submodule's port would then pass for the top's.
if {![regexp -indices {module\s+stepvit_accel\s*\(} $verilog_text accel_start]} {
    stepvit_fail "$verilog has no module stepvit_accel"
}
set accel_end [string first endmodule $verilog_text [lindex $accel_start 1]]
if {$accel_end < 0} { stepvit_fail "module stepvit_accel in $verilog has no endmodule" }
set accel_text [string range $verilog_text [lindex $accel_start 0] $accel_end]
foreach port $accel_ports {
    if {![regexp "(input|output)\[^;\]*\\m$port\\M" $accel_text]} {
        stepvit_fail "stepvit_accel in $verilog has no port $port"
    }
}
set accel_ddr [regexp {(input|output)[^;]*\mm_axi_araddr\M} $accel_text]
if {$accel_ddr} {
    foreach port $accel_ddr_ports {
        if {![regexp "(input|output)\[^;\]*\\m$port\\M" $accel_text]} {
            stepvit_fail "stepvit_accel in $verilog has m_axi_araddr but no port $port"
        }
    }
    if {[regexp {(input|output)[^;]*\mm_axi_awaddr\M} $accel_text]} {
        foreach port $accel_ddr_write_ports {
            if {![regexp "(input|output)\[^;\]*\\m$port\\M" $accel_text]} {
                stepvit_fail "stepvit_accel in $verilog has m_axi_awaddr but no port $port"
            }
        }
    }
    if {![info exists ddr_port] || ![info exists ddr_width]} {
        stepvit_fail "stepvit_accel reads its weights from DDR (m_axi_*), but board.tcl sets no\
            ddr_port and ddr_width: add a ddr section to board.yaml and lay the folder out again"
    }
}

set project_dir [file join $out_dir vivado]
create_project stepvit_overlay $project_dir -part $part -force
if {[llength [get_board_parts -quiet $board_part]] > 0} {
    set_property board_part $board_part [current_project]
    set have_board 1
} else {
    puts "WARNING: board files for $board_part are not installed: part $part without presets"
    set have_board 0
}
add_files -norecurse $verilog
update_compile_order -fileset sources_1

create_bd_design stepvit

# The processing system: fabric clock, a GP master for AXI-Lite, an HP slave for the DMA.
set ps [create_bd_cell -type ip -vlnv [latest_ip $ps_ip] ${ps_ip}_0]
set gp_master $ps/$gp_port
set hp_slave $ps/$hp_port
if {$ps_ip eq "processing_system7"} {
    apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
        -config [list make_external "FIXED_IO, DDR" apply_board_preset $have_board \
                     Master Disable Slave Disable] $ps
    set_property -dict [list \
        CONFIG.PCW_USE_M_AXI_GP0 {1} \
        CONFIG.PCW_USE_S_AXI_HP0 {1} \
        CONFIG.PCW_S_AXI_HP0_DATA_WIDTH $dma_width \
        CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $clock_mhz] $ps
    set fabric_clock $ps/FCLK_CLK0
    set fabric_reset $ps/FCLK_RESET0_N
    set port_clocks [list $ps/M_AXI_GP0_ACLK $ps/S_AXI_HP0_ACLK]
    if {$accel_ddr} {
        # The second HP port (ddr_port, S_AXI_HP1) for the accelerator's weight loads.
        set hp [string map {S_AXI_ {}} $ddr_port]
        set_property -dict [list \
            CONFIG.PCW_USE_S_AXI_$hp {1} \
            CONFIG.PCW_S_AXI_${hp}_DATA_WIDTH $ddr_width] $ps
        lappend port_clocks $ps/${ddr_port}_ACLK
    }
} elseif {$ps_ip eq "zynq_ultra_ps_e"} {
    if {$have_board} {
        apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e \
            -config {apply_board_preset "1"} $ps
    }
    set_property -dict [list \
        CONFIG.PSU__USE__M_AXI_GP0 {1} \
        CONFIG.PSU__USE__M_AXI_GP1 {0} \
        CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__USE__S_AXI_GP2 {1} \
        CONFIG.PSU__SAXIGP2__DATA_WIDTH $dma_width \
        CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $clock_mhz] $ps
    set fabric_clock $ps/pl_clk0
    set fabric_reset $ps/pl_resetn0
    set port_clocks [list $ps/maxihpm0_fpd_aclk $ps/saxihp0_fpd_aclk]
    if {$accel_ddr} {
        # The second HP port (ddr_port, S_AXI_HPn_FPD: the PS's slave S_AXI_GP(n+2)) for the
        # accelerator's weight loads.
        if {![regexp {^S_AXI_HP(\d)_FPD$} $ddr_port -> hp]} {
            stepvit_fail "ddr_port must be S_AXI_HP<n>_FPD on zynq_ultra_ps_e, not $ddr_port"
        }
        set gp [expr {$hp + 2}]
        set_property -dict [list \
            CONFIG.PSU__USE__S_AXI_GP$gp {1} \
            CONFIG.PSU__SAXIGP${gp}__DATA_WIDTH $ddr_width] $ps
        lappend port_clocks $ps/saxihp${hp}_fpd_aclk
    }
} else {
    stepvit_fail "ps_ip must be processing_system7 or zynq_ultra_ps_e, not $ps_ip"
}

# One reset synchroniser for the fabric clock; every AXI block takes its peripheral reset.
set reset [create_bd_cell -type ip -vlnv [latest_ip proc_sys_reset] proc_sys_reset_0]
connect_bd_net [get_bd_pins $fabric_clock] [get_bd_pins $reset/slowest_sync_clk]
connect_bd_net [get_bd_pins $fabric_reset] [get_bd_pins $reset/ext_reset_in]

# The DMA: simple mode, 32-bit streams, the memory side as wide as the HP port.
set dma [create_bd_cell -type ip -vlnv [latest_ip axi_dma] axi_dma_0]
set_property -dict [list \
    CONFIG.c_include_sg {0} \
    CONFIG.c_sg_length_width {26} \
    CONFIG.c_m_axis_mm2s_tdata_width {32} \
    CONFIG.c_m_axi_mm2s_data_width $dma_width \
    CONFIG.c_m_axi_s2mm_data_width $dma_width \
    CONFIG.c_mm2s_burst_size {16} \
    CONFIG.c_s2mm_burst_size {16}] $dma

# The accelerator: the generated Verilog as a module reference. Its X_INTERFACE_INFO
# attributes make Vivado infer s_axis, m_axis (AXI4-Stream) and s_axil (AXI4-Lite).
set accel [create_bd_cell -type module -reference stepvit_accel stepvit_accel_0]
foreach interface [concat {s_axis m_axis s_axil} [expr {$accel_ddr ? {m_axi} : {}}]] {
    if {[llength [get_bd_intf_pins -quiet $accel/$interface]] == 0} {
        stepvit_fail "Vivado did not infer interface $interface on stepvit_accel"
    }
}

connect_bd_intf_net [get_bd_intf_pins $dma/M_AXIS_MM2S] [get_bd_intf_pins $accel/s_axis]
connect_bd_intf_net [get_bd_intf_pins $accel/m_axis] [get_bd_intf_pins $dma/S_AXIS_S2MM]

# Clocks and resets first: the AXI automation (Clk Auto) then finds every block on one clock.
foreach pin [concat $port_clocks [list $dma/s_axi_lite_aclk $dma/m_axi_mm2s_aclk \
                                       $dma/m_axi_s2mm_aclk $accel/aclk]] {
    connect_if_open $fabric_clock $pin
}
connect_bd_net [get_bd_pins $reset/peripheral_aresetn] [get_bd_pins $dma/axi_resetn]
connect_bd_net [get_bd_pins $reset/peripheral_aresetn] [get_bd_pins $accel/aresetn]
# A module reference's clock pin keeps its default FREQ_HZ (100 MHz) unless told; the
# UltraScale+ pl_clk0 runs at 99.999 MHz and validate_bd_design would refuse the mismatch.
set_property CONFIG.FREQ_HZ [get_property CONFIG.FREQ_HZ [get_bd_pins $fabric_clock]] \
    [get_bd_pins $accel/aclk]

# AXI-Lite: the GP master to the DMA's and the accelerator's registers.
foreach slave [list $dma/S_AXI_LITE $accel/s_axil] {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
        -config [list Master [bd_path $gp_master] Clk_master Auto Clk_slave Auto Clk_xbar Auto] \
        [get_bd_intf_pins $slave]
}
# The DMA's memory side to the HP port.
foreach master [list $dma/M_AXI_MM2S $dma/M_AXI_S2MM] {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
        -config [list Slave [bd_path $hp_slave] Clk_master Auto Clk_slave Auto Clk_xbar Auto] \
        [get_bd_intf_pins $master]
}

# The accelerator's weight reads to the second HP port (its own address space: DDR).
if {$accel_ddr} {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
        -config [list Slave [bd_path $ps/$ddr_port] Clk_master Auto Clk_slave Auto \
                     Clk_xbar Auto] \
        [get_bd_intf_pins $accel/m_axi]
}

assign_bd_address
validate_bd_design
save_bd_design

set wrapper [make_wrapper -files [get_files stepvit.bd] -top]
add_files -norecurse $wrapper
set_property top stepvit_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs impl_1 -to_step write_bitstream -jobs 4
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    stepvit_fail "implementation did not finish: see $project_dir/stepvit_overlay.runs/impl_1"
}
# A bitstream that misses timing runs, and answers with wrong results: refuse it here.
set setup_slack [get_property STATS.WNS [get_runs impl_1]]
set hold_slack [get_property STATS.WHS [get_runs impl_1]]
if {![string is double -strict $setup_slack] || ![string is double -strict $hold_slack]} {
    stepvit_fail "impl_1 reports no timing (STATS.WNS '$setup_slack', STATS.WHS\
        '$hold_slack'): see $project_dir/stepvit_overlay.runs/impl_1"
}
if {$setup_slack < 0 || $hold_slack < 0} {
    stepvit_fail "timing not met at $clock_mhz MHz: setup slack (WNS) $setup_slack ns, hold\
        slack (WHS) $hold_slack ns; no stepvit.bit written (lower clock_mhz or the lanes and\
        rebuild; the failing run is in $project_dir/stepvit_overlay.runs/impl_1)"
}

file mkdir $out_dir
set bitstream [lindex [glob -nocomplain $project_dir/stepvit_overlay.runs/impl_1/*.bit] 0]
set handoff [lindex [glob -nocomplain \
    $project_dir/stepvit_overlay.gen/sources_1/bd/stepvit/hw_handoff/stepvit.hwh \
    $project_dir/stepvit_overlay.srcs/sources_1/bd/stepvit/hw_handoff/stepvit.hwh] 0]
if {$bitstream eq "" || $handoff eq ""} { stepvit_fail "no bitstream or hardware handoff found" }
file copy -force $bitstream [file join $out_dir stepvit.bit]
file copy -force $handoff [file join $out_dir stepvit.hwh]
puts "stepvit overlay: [file join $out_dir stepvit.bit] and stepvit.hwh written (WNS\
    $setup_slack ns, WHS $hold_slack ns at $clock_mhz MHz)"
