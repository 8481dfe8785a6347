
# n2d: machine, swarm, image and host names, asked of n2d itself where a command takes one.
function __n2d_names
    switch $argv[1]
        case machine
            n2d ls -q 2>/dev/null
        case swarm
            n2d swarm ls -q 2>/dev/null
        case image
            n2d image ls -q 2>/dev/null
        case host
            n2d host ls -q 2>/dev/null
    end
end
complete -c n2d -n "__fish_seen_subcommand_from inspect ip env start stop restart suspend rm delete logs console exec port; and not __fish_seen_subcommand_from swarm image certs host fault" -f -a "(__n2d_names machine)"
complete -c n2d -n "__fish_seen_subcommand_from certs; and __fish_seen_subcommand_from rotate" -f -a "(__n2d_names machine)"
complete -c n2d -n "__fish_seen_subcommand_from fault; and __fish_seen_subcommand_from partition delay pause kill-engine fill-disk clock clear" -f -a "(__n2d_names machine)"
complete -c n2d -n "__fish_seen_subcommand_from swarm; and __fish_seen_subcommand_from env rm suspend scale load upgrade add-host" -f -a "(__n2d_names swarm)"
complete -c n2d -n "__fish_seen_subcommand_from image; and __fish_seen_subcommand_from inspect rm warm export" -f -a "(__n2d_names image)"
complete -c n2d -n "__fish_seen_subcommand_from host; and __fish_seen_subcommand_from rm delete" -f -a "(__n2d_names host)"
