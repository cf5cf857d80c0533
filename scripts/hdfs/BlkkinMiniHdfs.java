// A one-NameNode, one-DataNode HDFS on loopback for blkkin's tests, built on
// Hadoop's MiniDFSCluster (hadoop-minicluster from Maven Central).
//
// Usage: java BlkkinMiniHdfs STATE_DIR
// Writes STATE_DIR/cluster.env (NAMENODE_URL, NAMENODE_PORT, WEBHDFS_PORT,
// PID) once the cluster is up, then polls STATE_DIR/control: a file holding
// "restart-namenode" restarts the NameNode on the same ports (the file is
// deleted when done and STATE_DIR/restarts counts restarts); "stop" shuts
// everything down. scripts/hdfs.sh drives it.

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public class BlkkinMiniHdfs {
    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: BlkkinMiniHdfs STATE_DIR");
            System.exit(2);
        }
        File state = new File(args[0]).getAbsoluteFile();
        File data = new File(state, "data");
        Configuration conf = new HdfsConfiguration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, data.getPath());
        conf.set("dfs.replication", "1");
        conf.set("dfs.blocksize", "16777216");
        conf.set("dfs.webhdfs.enabled", "true");
        conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.namenode.http-bind-host", "127.0.0.1");
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        conf.set("dfs.permissions.enabled", "false");
        conf.set("hadoop.security.authentication", "simple");

        MiniDFSCluster dfs = new MiniDFSCluster.Builder(conf)
            .numDataNodes(1)
            .nameNodePort(0)
            .nameNodeHttpPort(0)
            .checkDataNodeHostConfig(true)
            .build();
        dfs.waitActive();
        writeEnv(dfs, state);

        File control = new File(state, "control");
        int restarts = 0;
        while (true) {
            Thread.sleep(200);
            if (!control.exists()) {
                continue;
            }
            String cmd = new String(Files.readAllBytes(control.toPath()), StandardCharsets.UTF_8).trim();
            if (cmd.equals("restart-namenode")) {
                System.err.println("blkkin-minihdfs: restarting the NameNode");
                dfs.restartNameNode(true);
                dfs.waitActive();
                writeEnv(dfs, state);
                restarts++;
                Files.write(new File(state, "restarts").toPath(),
                    (restarts + "\n").getBytes(StandardCharsets.UTF_8));
                System.err.println("blkkin-minihdfs: NameNode back at port " + dfs.getNameNodePort());
            } else if (cmd.equals("stop")) {
                control.delete();
                break;
            } else if (cmd.isEmpty()) {
                // Being written; look again.
                continue;
            } else {
                System.err.println("blkkin-minihdfs: unknown control command: " + cmd);
            }
            control.delete();
        }
        dfs.shutdown();
        System.err.println("blkkin-minihdfs: stopped");
        System.exit(0);
    }

    /** Publishes the current ports atomically in STATE_DIR/cluster.env. */
    static void writeEnv(MiniDFSCluster dfs, File state) throws Exception {
        int rpc = dfs.getNameNodePort();
        int http = dfs.getNameNode().getHttpAddress().getPort();
        String env = "NAMENODE_URL=hdfs://127.0.0.1:" + rpc + "\n"
            + "NAMENODE_PORT=" + rpc + "\n"
            + "WEBHDFS_PORT=" + http + "\n"
            + "PID=" + ProcessHandle.current().pid() + "\n";
        File tmp = new File(state, "cluster.env.tmp");
        Files.write(tmp.toPath(), env.getBytes(StandardCharsets.UTF_8));
        Files.move(tmp.toPath(), new File(state, "cluster.env").toPath(),
            StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        System.err.println("blkkin-minihdfs: ready at hdfs://127.0.0.1:" + rpc + " webhdfs " + http);
    }
}
